"""Pieces shared by the audio encoders (VGGish, PANNs, BEATs): waveform checks, the per-second
feature extractor they all build on, the multi-label AudioSet loss, and running an encoder on one
audio input per video frame (`encode_audio_segments`, and `AudioEncoderMixin` for the segmentation
models that hold an audio encoder)."""

from __future__ import annotations

import numbers
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BatchFeature, SequenceFeatureExtractor
from transformers.utils import TensorType

from .hub_code import HubFeatureExtractorMixin
from .inputs import check_finite, check_shape
from .resampling import band_limited_resample


def validate_sampling_rate(sampling_rate) -> int:
    """The rate as an int, or a `ValueError` saying what a valid one is."""
    if sampling_rate is None:
        raise ValueError(
            "`sampling_rate` is required for raw audio arrays: pass the rate of the waveform in Hz, "
            "e.g. `feature_extractor(waveform, sampling_rate=16000)`"
        )
    is_number = isinstance(sampling_rate, numbers.Real) and not isinstance(sampling_rate, bool)
    if not is_number or not float(sampling_rate).is_integer() or sampling_rate <= 0:
        raise ValueError(f"`sampling_rate` must be a positive whole number of Hz, got {sampling_rate!r}")
    return int(sampling_rate)


def to_mono_float_waveform(waveform) -> np.ndarray:
    """One waveform (1-D, or 2-D multi-channel) as a mono float64 array in the input's own scale."""
    if hasattr(waveform, "detach"):  # torch.Tensor
        waveform = waveform.detach().cpu().numpy()
    array = np.asarray(waveform)
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(f"`raw_audio` must hold float or integer PCM samples, got dtype {array.dtype}")
    if array.ndim not in (1, 2):
        raise ValueError(
            "`raw_audio` must be a 1-D waveform [samples] or a 2-D multi-channel waveform [samples, channels] "
            f"or [channels, samples] (pass several clips as a list), got shape {tuple(array.shape)}"
        )
    if array.size == 0:
        raise ValueError("`raw_audio` is empty: it has no samples")
    if np.issubdtype(array.dtype, np.signedinteger):
        # Integer PCM to [-1, 1): int16 is divided by 32768, as the VGGish reference does.
        array = array.astype(np.float64) / float(2 ** (8 * array.dtype.itemsize - 1))
    elif np.issubdtype(array.dtype, np.unsignedinteger):
        half_range = float(2 ** (8 * array.dtype.itemsize - 1))
        array = (array.astype(np.float64) - half_range) / half_range
    else:
        array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("`raw_audio` contains NaN or infinite samples")
    if array.ndim == 2:
        # Channels are the shorter axis: soundfile gives [samples, channels], PyAV [channels, samples].
        channel_axis = int(np.argmin(array.shape))
        array = array.mean(axis=channel_axis)
    return array


def validated_count(name: str, value, optional: bool = False) -> int | None:
    """A positive integer setting (or None when `optional`), else a `ValueError` naming it."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        allowed = "a positive integer or None" if optional else "a positive integer"
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}")
    return int(value)


class SegmentFeatureExtractor(HubFeatureExtractorMixin, SequenceFeatureExtractor):
    """Base of the audio encoders' feature extractors: a clip becomes one model input per segment
    (about one second, one per video frame), a list of clips a padded batch.

    Subclasses set `model_input_names` and implement `waveform_to_segments(waveform, num_segments)`,
    which turns a mono float64 waveform at `sampling_rate` into a float32 array `[T, ...]` (padded
    with silence or trimmed to exactly `num_segments` segments when that is given).
    Audio at another rate is resampled with the band-limited filter of the VGGish reference pipeline
    (`models.resampling`).
    """

    model_input_names: ClassVar[list[str]]

    def waveform_to_segments(self, waveform: np.ndarray, num_segments: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def resample(self, waveform: np.ndarray, source_rate: int) -> np.ndarray:
        """Resample a float waveform from `source_rate` to `sampling_rate` with the band-limited
        windowed-sinc filter of the VGGish reference (`models.resampling.band_limited_resample`)."""
        if source_rate == self.sampling_rate:
            return waveform
        return band_limited_resample(waveform, source_rate, self.sampling_rate)

    def __call__(
        self,
        raw_audio,
        sampling_rate: int | None = None,
        num_segments: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | TensorType | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Turn one clip or a batch of clips into segments.

        Args:
            raw_audio (`np.ndarray`, `torch.Tensor`, `list[float]`, or a list of those):
                One clip, as a 1-D waveform or a 2-D multi-channel waveform (averaged to mono);
                float samples in [-1, 1] or integer PCM. A list of clips makes a batch.
            sampling_rate (`int`): rate of `raw_audio` in Hz; required. Other rates than
                `self.sampling_rate` are resampled.
            num_segments (`int`, *optional*): overrides `self.num_segments` (fixed T per clip).
            return_attention_mask (`bool`, *optional*): for a single clip, also return an all-ones
                `attention_mask` `[T]`. A batch always returns `attention_mask`.
            return_tensors (`str`, *optional*): `"pt"` or `"np"`.

        Returns:
            `BatchFeature` with the segments under `model_input_names[0]`: `[T, ...]` for one clip;
            for a batch, `[B, T_max, ...]` padded at the end with `padding_value`, plus
            `attention_mask` `[B, T_max]` (1 for real segments, 0 for padding).
        """
        if kwargs:
            raise TypeError(f"unexpected keyword arguments for {type(self).__name__}: {sorted(kwargs)}")
        source_rate = validate_sampling_rate(sampling_rate)
        num_segments = validated_count(
            "num_segments", num_segments if num_segments is not None else self.num_segments, optional=True
        )
        is_batch = (
            isinstance(raw_audio, (list, tuple))
            and len(raw_audio) > 0
            and not isinstance(raw_audio[0], numbers.Number)
        )
        clips = list(raw_audio) if is_batch else [raw_audio]
        segments = [
            self.waveform_to_segments(self.resample(to_mono_float_waveform(clip), source_rate), num_segments)
            for clip in clips
        ]
        key = self.model_input_names[0]
        if not is_batch:
            data = {key: segments[0]}
            if return_attention_mask if return_attention_mask is not None else self.return_attention_mask:
                data["attention_mask"] = np.ones(len(segments[0]), dtype=np.int64)
            return BatchFeature(data, tensor_type=return_tensors)

        max_segments = max(len(clip_segments) for clip_segments in segments)
        values = np.full(
            (len(segments), max_segments, *segments[0].shape[1:]), self.padding_value, dtype=np.float32
        )
        attention_mask = np.zeros((len(segments), max_segments), dtype=np.int64)
        for index, clip_segments in enumerate(segments):
            values[index, : len(clip_segments)] = clip_segments
            attention_mask[index, : len(clip_segments)] = 1
        return BatchFeature({key: values, "attention_mask": attention_mask}, tensor_type=return_tensors)


class WaveformSegmentFeatureExtractor(SegmentFeatureExtractor):
    r"""Cuts waveforms into fixed-length raw segments, for encoders whose spectrogram front end is
    inside the model (PANNs, BEATs): a clip of T seconds at 16 kHz gives `input_values` `[T, 16000]`.

    Multi-channel audio is averaged to mono; integer PCM is scaled to [-1, 1) (int16 divided by
    32768). Without `num_segments` an incomplete last segment is dropped.

    Args:
        feature_size (`int`, defaults to 1): values per sample (a mono waveform).
        sampling_rate (`int`, defaults to 16000): rate of the returned waveforms.
        segment_length (`int`, defaults to 16000): samples per segment (one second).
        num_segments (`int`, *optional*): when set, every clip gives exactly this many segments: the
            waveform is padded with silence (zeros) or trimmed to `num_segments * segment_length`
            (what C3N's data loader does with 5).
        padding_value (`float`, defaults to 0.0): value of padded segments in a batch (silence).
    """

    model_input_names: ClassVar[list[str]] = ["input_values"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 16000,
        segment_length: int = 16000,
        num_segments: int | None = None,
        padding_value: float = 0.0,
        return_attention_mask: bool = False,
        **kwargs,
    ):
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.segment_length = validated_count("segment_length", segment_length)
        self.num_segments = validated_count("num_segments", num_segments, optional=True)

    def waveform_to_segments(self, waveform: np.ndarray, num_segments: int | None = None) -> np.ndarray:
        """Mono float64 waveform at `sampling_rate` -> `[T, segment_length]` float32."""
        if num_segments is not None:
            needed = num_segments * self.segment_length
            waveform = np.pad(waveform[:needed], (0, max(0, needed - len(waveform))))
        elif len(waveform) < self.segment_length:
            raise ValueError(
                f"`raw_audio` is too short: {len(waveform)} samples at {self.sampling_rate} Hz, but one segment "
                f"needs {self.segment_length} samples ({self.segment_length / self.sampling_rate:.3f} s); "
                "pass `num_segments` to pad with silence"
            )
        count = len(waveform) // self.segment_length
        segments = waveform[: count * self.segment_length].reshape(count, self.segment_length)
        return segments.astype(np.float32)


def flatten_waveforms(
    input_values: torch.Tensor, min_num_samples: int, sampling_rate: int
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Check `[N, samples]` or `[B, T, samples]` waveforms; return them as `[N, samples]` and the
    leading dims (the encoders' outputs keep them)."""
    if not isinstance(input_values, torch.Tensor):
        raise TypeError(f"`input_values` must be a torch.Tensor, got {type(input_values).__name__}")
    if not input_values.is_floating_point():
        raise TypeError(
            f"`input_values` must be a float tensor (waveforms in [-1, 1]), got dtype {input_values.dtype}"
        )
    if input_values.dim() not in (2, 3):
        raise ValueError(
            f"`input_values` must have shape [N, samples] or [B, T, samples] (waveforms at {sampling_rate} Hz), "
            f"got {tuple(input_values.shape)}"
        )
    if input_values.numel() == 0:
        raise ValueError(f"`input_values` is empty (shape {tuple(input_values.shape)})")
    if input_values.shape[-1] < min_num_samples:
        raise ValueError(
            f"`input_values` are too short: {input_values.shape[-1]} samples per waveform, but the model needs "
            f"at least {min_num_samples} ({min_num_samples / sampling_rate:.3f} s at {sampling_rate} Hz)"
        )
    return input_values.reshape(-1, input_values.shape[-1]), tuple(input_values.shape[:-1])


def with_leading_dims(tensor: torch.Tensor, leading_dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """`[N, ...]` -> (`[*leading_dims, ...]`, that tensor viewed back as `[N, ...]`).

    The encoders run on flattened examples but return their hidden states and attention maps with
    the input's leading dims (`[B, T, ...]`). Continuing the forward from the second tensor puts the
    first, the returned one, on the forward's path, so gradients reach it (`retain_grad`), as
    users of `output_hidden_states` / `output_attentions` expect.
    """
    shaped = tensor.reshape(*leading_dims, *tensor.shape[1:])
    return shaped, shaped.flatten(0, len(leading_dims) - 1)


def keep_hidden_state(
    hidden_state: torch.Tensor, leading_dims: tuple[int, ...], hidden_states: list[torch.Tensor] | None
) -> torch.Tensor:
    """Append `hidden_state` `[N, ...]` to `hidden_states` with the input's leading dims and return the
    tensor to continue the forward from (see `with_leading_dims`); with `hidden_states=None` (not
    asked for) the state passes through untouched."""
    if hidden_states is None:
        return hidden_state
    shaped, hidden_state = with_leading_dims(hidden_state, leading_dims)
    hidden_states.append(shaped)
    return hidden_state


def multi_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of AudioSet-style multi-hot `labels` against `logits` of the same shape."""
    if labels.shape != logits.shape:
        raise ValueError(
            f"`labels` must have shape {tuple(logits.shape)} (multi-hot), got {tuple(labels.shape)}"
        )
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def encode_audio_segments(
    encoder: torch.nn.Module, input_name: str, audio_inputs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run an audio model on one input per frame.

    Args:
        encoder: VGGish, PANNs or BEATs (model or classifier), or a Transformers audio classifier.
        input_name: the keyword the encoder takes (`"input_features"` or `"input_values"`).
        audio_inputs: `(B, T, ...)`, one input per frame.

    Returns:
        `embeddings` `(B, T, D)`: the encoder's `embeddings`, or the mean of its last hidden
        states for classifiers without them (e.g. the Audio Spectrogram Transformer); and
        `logits` `(B, T, num_labels)`, or None when the encoder is no classifier.
    """
    batch, frames = audio_inputs.shape[:2]
    output = encoder(**{input_name: audio_inputs.flatten(0, 1)}, output_hidden_states=True, return_dict=True)
    embeddings = getattr(output, "embeddings", None)
    if embeddings is None:
        embeddings = output.hidden_states[-1].mean(dim=1)
    logits = getattr(output, "logits", None)
    return embeddings.reshape(batch, frames, -1), None if logits is None else logits.reshape(
        batch, frames, -1
    )


class AudioEncoderMixin:
    """For the segmentation models (TPAVI, C3N, PCMANet, AVSegFormer) with an optional audio encoder.

    The model sets `self.audio_encoder` (None when it takes precomputed embeddings only), and its
    config has `audio_embed_dim` and `freeze_audio_encoder`. The mixin keeps a frozen encoder frozen
    and in eval mode through `train()`, and runs the encoder on one audio input per frame.
    """

    def train(self, mode: bool = True):
        super().train(mode)
        # A frozen audio encoder keeps its inference behaviour (dropout, batch norm) while the rest
        # trains. Freezing lives here, not only in __init__: from_pretrained replaces every parameter
        # with a fresh one that requires grad, then calls eval().
        if self.audio_encoder is not None and self.config.freeze_audio_encoder:
            self.audio_encoder.eval().requires_grad_(False)
        return self

    def _precomputed_audio_hint(self, batch: int, frames: int) -> str:
        """What to pass instead of raw audio when the model has no audio encoder."""
        width = self.config.audio_embed_dim
        return f"VGGish embeddings as `audio_embeds` of shape ({batch}, {frames}, {width})"

    def encode_audio(
        self, audio_inputs: torch.Tensor, input_name: str, batch: int, frames: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the audio encoder on one audio input per frame (without gradients when it is frozen).

        Args:
            audio_inputs: `(batch, frames, ...)`: VGGish log-mel examples `(B, T, 1, 96, 64)` as
                `input_features`, or one-second waveforms `(B, T, samples)` as `input_values`
                (PANNs, BEATs), or whatever the encoder's own feature extractor gives per segment.
            input_name: `"input_features"` or `"input_values"`, the encoder's `main_input_name`.

        Returns:
            `audio_embeds` `(B, T, audio_embed_dim)` and, for a classifier, `audio_logits`
            `(B, T, num_audio_classes)` (else None).
        """
        if self.audio_encoder is None:
            model_name = type(self).__name__.removesuffix("ForAudioVisualSegmentation")
            raise ValueError(
                f"This {model_name} model has no audio encoder (config.audio_config is None): pass "
                f"{self._precomputed_audio_hint(batch, frames)} instead of `{input_name}`."
            )
        if not isinstance(audio_inputs, torch.Tensor) or tuple(audio_inputs.shape[:2]) != (batch, frames):
            shape = tuple(getattr(audio_inputs, "shape", ())) or type(audio_inputs).__name__
            raise ValueError(
                f"`{input_name}` must start with (batch, frames) = ({batch}, {frames}) to match pixel_values, "
                f"got {shape}"
            )
        expected = self.audio_encoder.main_input_name
        if input_name != expected:
            raise ValueError(
                f"the audio encoder ({self.config.audio_config.model_type}) takes `{expected}`, "
                f"not `{input_name}`"
            )
        check_finite(input_name, audio_inputs)
        if audio_inputs.is_floating_point():
            audio_inputs = audio_inputs.to(self.audio_encoder.dtype)
        trainable = torch.is_grad_enabled() and not self.config.freeze_audio_encoder
        with torch.set_grad_enabled(trainable):
            return encode_audio_segments(self.audio_encoder, input_name, audio_inputs)

    def _embed_audio(
        self,
        input_features: torch.Tensor | None,
        audio_embeds: torch.Tensor | None,
        batch: int,
        frames: int,
    ) -> torch.Tensor:
        """`(B, T, audio_embed_dim)` audio embeddings in the model's dtype: log-mel `input_features`
        through the audio encoder, or `audio_embeds` as given (checked)."""
        if (input_features is None) == (audio_embeds is None):
            raise ValueError("Pass exactly one of `input_features` (log-mel) and `audio_embeds`.")
        if audio_embeds is None:
            audio_embeds, _ = self.encode_audio(input_features, "input_features", batch, frames)
        check_shape("audio_embeds", audio_embeds, (batch, frames, self.config.audio_embed_dim))
        check_finite("audio_embeds", audio_embeds)
        return audio_embeds.to(self.dtype)
