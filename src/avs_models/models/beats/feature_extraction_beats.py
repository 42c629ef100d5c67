"""Feature extractor of BEATs: a waveform becomes `[T, 16000]` one-second 16 kHz segments.

BEATs computes its Kaldi fbank inside the model, so the extractor only prepares the waveform:
mono, 16 kHz, float in [-1, 1], cut into one segment per second (one per video frame in AVS).
"""

from __future__ import annotations

import math
import numbers
from typing import ClassVar

import numpy as np
from scipy.signal import resample_poly
from transformers import BatchFeature, SequenceFeatureExtractor
from transformers.utils import TensorType

from ..vggish.feature_extraction_vggish import to_mono_float_waveform, validate_sampling_rate


class BeatsFeatureExtractor(SequenceFeatureExtractor):
    r"""Turns waveforms into the one-second segments [`BeatsModel`] takes as `input_values`.

    Multi-channel audio is averaged to mono; integer PCM is scaled to [-1, 1) (int16 divided by
    32768); audio at another rate is resampled to 16 kHz with `scipy.signal.resample_poly` (C3N
    resamples with librosa when it loads the wav, so resampled audio can differ slightly from
    its input; 16 kHz audio is used as is). A clip of `T` whole seconds gives `[T, 16000]`; a
    trailing partial second is dropped unless `num_segments` is given.

    Args:
        feature_size (`int`, defaults to 1): channels per sample (mono).
        sampling_rate (`int`, defaults to 16000): rate the model expects.
        segment_length (`int`, defaults to 16000): samples per segment (one second).
        num_segments (`int`, *optional*): when set, every clip gives exactly this many segments:
            the waveform is padded with silence or trimmed to `num_segments * segment_length`
            samples (what C3N's data loader does with `num_segments=5`).
        padding_value (`float`, defaults to 0.0): value of padded samples (silence).
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
        if (
            isinstance(segment_length, bool)
            or not isinstance(segment_length, numbers.Integral)
            or segment_length < 1
        ):
            raise ValueError(f"`segment_length` must be a positive integer, got {segment_length!r}")
        self.segment_length = int(segment_length)
        self.num_segments = self._validated_num_segments(num_segments)

    @staticmethod
    def _validated_num_segments(num_segments) -> int | None:
        if num_segments is None:
            return None
        if (
            isinstance(num_segments, bool)
            or not isinstance(num_segments, numbers.Integral)
            or num_segments < 1
        ):
            raise ValueError(f"`num_segments` must be a positive integer or None, got {num_segments!r}")
        return int(num_segments)

    def waveform_to_segments(self, waveform: np.ndarray, num_segments: int | None = None) -> np.ndarray:
        """Mono float64 waveform at `sampling_rate` -> `[T, segment_length]` float32."""
        if num_segments is not None:
            needed = num_segments * self.segment_length
            waveform = np.pad(waveform[:needed], (0, max(0, needed - len(waveform))))
        elif len(waveform) < self.segment_length:
            raise ValueError(
                f"`raw_audio` is too short: {len(waveform)} samples at {self.sampling_rate} Hz, but one segment "
                f"needs {self.segment_length} samples ({self.segment_length / self.sampling_rate:.3f} s); pass "
                "`num_segments` to pad with silence"
            )
        whole = len(waveform) // self.segment_length * self.segment_length
        return np.ascontiguousarray(waveform[:whole].reshape(-1, self.segment_length), dtype=np.float32)

    def __call__(
        self,
        raw_audio,
        sampling_rate: int | None = None,
        num_segments: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | TensorType | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Cut one clip or a batch of clips into segments.

        Args:
            raw_audio (`np.ndarray`, `torch.Tensor`, `list[float]`, or a list of those):
                One clip, as a 1-D waveform or a 2-D multi-channel waveform (averaged to mono);
                float samples in [-1, 1] or integer PCM. A list of clips makes a batch.
            sampling_rate (`int`): rate of `raw_audio` in Hz; required. Other rates than
                `self.sampling_rate` are resampled (see the class docstring).
            num_segments (`int`, *optional*): overrides `self.num_segments` (fixed T per clip).
            return_attention_mask (`bool`, *optional*): for a single clip, also return an all-ones
                `attention_mask` `[T]`. A batch always returns `attention_mask`.
            return_tensors (`str`, *optional*): `"pt"` or `"np"`.

        Returns:
            `BatchFeature` with `input_values`: `[T, 16000]` for one clip; for a batch,
            `[B, T_max, 16000]` padded at the end with silent segments, plus `attention_mask`
            `[B, T_max]` (1 for real segments, 0 for padding).
        """
        if kwargs:
            raise TypeError(f"unexpected keyword arguments for {type(self).__name__}: {sorted(kwargs)}")
        source_rate = validate_sampling_rate(sampling_rate)
        num_segments = self._validated_num_segments(
            num_segments if num_segments is not None else self.num_segments
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
        if not is_batch:
            data = {"input_values": segments[0]}
            if return_attention_mask if return_attention_mask is not None else self.return_attention_mask:
                data["attention_mask"] = np.ones(len(segments[0]), dtype=np.int64)
            return BatchFeature(data, tensor_type=return_tensors)

        max_segments = max(len(clip_segments) for clip_segments in segments)
        values = np.full(
            (len(segments), max_segments, self.segment_length), self.padding_value, dtype=np.float32
        )
        attention_mask = np.zeros((len(segments), max_segments), dtype=np.int64)
        for index, clip_segments in enumerate(segments):
            values[index, : len(clip_segments)] = clip_segments
            attention_mask[index, : len(clip_segments)] = 1
        return BatchFeature(
            {"input_values": values, "attention_mask": attention_mask}, tensor_type=return_tensors
        )

    def resample(self, waveform: np.ndarray, source_rate: int) -> np.ndarray:
        """Resample a float waveform from `source_rate` to `sampling_rate` (`scipy.signal.resample_poly`)."""
        if source_rate == self.sampling_rate:
            return waveform
        divisor = math.gcd(source_rate, self.sampling_rate)
        return resample_poly(waveform, self.sampling_rate // divisor, source_rate // divisor)


__all__ = ["BeatsFeatureExtractor"]
