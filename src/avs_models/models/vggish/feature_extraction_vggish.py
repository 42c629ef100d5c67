"""Feature extractor of VGGish: a waveform becomes `[T, 1, 96, 64]` log-mel examples."""

from __future__ import annotations

import math
import numbers
from typing import ClassVar

import numpy as np
from scipy.signal import resample_poly
from transformers import BatchFeature, SequenceFeatureExtractor
from transformers.utils import TensorType

# Constants of the HTK mel scale used by VGGish: mel = 1127 * ln(1 + f / 700).
_HTK_MEL_FACTOR = 1127.0
_HTK_MEL_BREAK_HZ = 700.0


def hertz_to_mel_htk(frequencies_hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, the one the VGGish reference uses."""
    return _HTK_MEL_FACTOR * np.log(1.0 + np.asarray(frequencies_hz, dtype=np.float64) / _HTK_MEL_BREAK_HZ)


def htk_mel_weights(
    num_mel_bins: int,
    num_spectrogram_bins: int,
    sampling_rate: int,
    min_frequency: float,
    max_frequency: float,
) -> np.ndarray:
    """Triangular mel filters, `[num_spectrogram_bins, num_mel_bins]` (float64).

    Triangles are linear in mel, with edges evenly spaced in mel between `min_frequency` and
    `max_frequency`; the DC bin always gets weight 0, as in HTK.
    """
    nyquist = sampling_rate / 2.0
    if not 0.0 <= min_frequency < max_frequency <= nyquist:
        raise ValueError(
            f"mel band edges must satisfy 0 <= min_frequency < max_frequency <= Nyquist ({nyquist} Hz), "
            f"got min_frequency={min_frequency}, max_frequency={max_frequency}"
        )
    bin_mels = hertz_to_mel_htk(np.linspace(0.0, nyquist, num_spectrogram_bins))[:, None]
    edges = np.linspace(hertz_to_mel_htk(min_frequency), hertz_to_mel_htk(max_frequency), num_mel_bins + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mels - lower) / (center - lower)
    falling = (upper - bin_mels) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def validate_sampling_rate(sampling_rate) -> int:
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
        # Integer PCM to [-1, 1): int16 is divided by 32768, as the reference does.
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


class VGGishFeatureExtractor(SequenceFeatureExtractor):
    r"""Turns waveforms into the log-mel examples VGGish expects.

    The front end of the reference VGGish (`waveform_to_examples`): 16 kHz mono audio, a 25 ms
    periodic Hann window every 10 ms, |FFT| of length 512, 64 HTK-mel bands between 125 and
    7500 Hz, `log(mel + 0.01)`, then non-overlapping examples of 96 frames (one per 0.96 s).
    The computation runs in float64 and matches the reference to about 1e-6.

    Audio at another rate is resampled to 16 kHz with `scipy.signal.resample_poly` (a polyphase
    FIR filter). The reference uses `resampy`, so features of resampled audio can differ slightly
    from the reference's; 16 kHz input is used as is and matches it. Multi-channel audio is
    averaged to mono; integer PCM is scaled to [-1, 1) (int16 divided by 32768, as the reference).

    Args:
        feature_size (`int`, defaults to 64): mel bands per frame.
        sampling_rate (`int`, defaults to 16000): rate the features are computed at.
        window_length (`int`, defaults to 400): STFT window in samples (25 ms).
        hop_length (`int`, defaults to 160): STFT hop in samples (10 ms).
        fft_length (`int`, defaults to 512): FFT size.
        min_frequency (`float`, defaults to 125.0): lower edge of the mel filter bank in Hz.
        max_frequency (`float`, defaults to 7500.0): upper edge of the mel filter bank in Hz.
        log_offset (`float`, defaults to 0.01): added to the mel energies before the log.
        example_length (`int`, defaults to 96): frames per example.
        example_hop (`int`, defaults to 96): frames between the starts of two examples.
        num_segments (`int`, *optional*): when set, every clip gives exactly this many examples:
            the waveform is padded with silence or trimmed to the needed length.
        padding_value (`float`, *optional*): value of padded examples in a batch; defaults to
            `log(log_offset)`, the log-mel value of silence.
    """

    model_input_names: ClassVar[list[str]] = ["input_features"]

    def __init__(
        self,
        feature_size: int = 64,
        sampling_rate: int = 16000,
        window_length: int = 400,
        hop_length: int = 160,
        fft_length: int = 512,
        min_frequency: float = 125.0,
        max_frequency: float = 7500.0,
        log_offset: float = 0.01,
        example_length: int = 96,
        example_hop: int = 96,
        num_segments: int | None = None,
        padding_value: float | None = None,
        return_attention_mask: bool = False,
        **kwargs,
    ):
        if padding_value is None:
            padding_value = math.log(log_offset)
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        if window_length > fft_length:
            raise ValueError(f"`window_length` ({window_length}) must not exceed `fft_length` ({fft_length})")
        self.window_length = window_length
        self.hop_length = hop_length
        self.fft_length = fft_length
        self.min_frequency = min_frequency
        self.max_frequency = max_frequency
        self.log_offset = log_offset
        self.example_length = example_length
        self.example_hop = example_hop
        self.num_segments = self._validated_num_segments(num_segments)
        # Not serialised (FeatureExtractionMixin.to_dict drops `window` and `mel_filters`).
        self.window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(window_length) / window_length)
        self.mel_filters = htk_mel_weights(
            feature_size, fft_length // 2 + 1, sampling_rate, min_frequency, max_frequency
        )

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

    @property
    def min_num_samples(self) -> int:
        """Samples needed for one example (15600 = 0.975 s at 16 kHz)."""
        return self.samples_for_examples(1)

    def samples_for_examples(self, num_segments: int) -> int:
        """Smallest waveform length (in samples at `sampling_rate`) that gives `num_segments` examples."""
        num_frames = self.example_hop * (num_segments - 1) + self.example_length
        return self.window_length + self.hop_length * (num_frames - 1)

    def log_mel_spectrogram(self, waveform: np.ndarray) -> np.ndarray:
        """`log(mel + log_offset)` of a mono waveform at `sampling_rate`: `[num_frames, feature_size]`."""
        frames = np.lib.stride_tricks.sliding_window_view(waveform, self.window_length)[:: self.hop_length]
        magnitudes = np.abs(np.fft.rfft(frames * self.window, n=self.fft_length))
        return np.log(magnitudes @ self.mel_filters + self.log_offset)

    def waveform_to_examples(self, waveform: np.ndarray, num_segments: int | None = None) -> np.ndarray:
        """Mono float64 waveform at `sampling_rate` -> `[T, 1, example_length, feature_size]` float32."""
        if num_segments is not None:
            needed = self.samples_for_examples(num_segments)
            waveform = np.pad(waveform[:needed], (0, max(0, needed - len(waveform))))
        elif len(waveform) < self.min_num_samples:
            raise ValueError(
                f"`raw_audio` is too short: {len(waveform)} samples at {self.sampling_rate} Hz, but one VGGish "
                f"example needs at least {self.min_num_samples} samples "
                f"({self.min_num_samples / self.sampling_rate:.3f} s); pass `num_segments` to pad with silence"
            )
        log_mel = self.log_mel_spectrogram(waveform)
        windows = np.lib.stride_tricks.sliding_window_view(log_mel, self.example_length, axis=0)[
            :: self.example_hop
        ]
        return np.ascontiguousarray(windows.transpose(0, 2, 1)[:, None], dtype=np.float32)

    def __call__(
        self,
        raw_audio,
        sampling_rate: int | None = None,
        num_segments: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | TensorType | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Compute the log-mel examples of one clip or a batch of clips.

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
            `BatchFeature` with `input_features`: `[T, 1, 96, 64]` for one clip; for a batch,
            `[B, T_max, 1, 96, 64]` padded at the end with `padding_value` (the log-mel of silence),
            plus `attention_mask` `[B, T_max]` (1 for real examples, 0 for padding).
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
        examples = [
            self.waveform_to_examples(self.resample(to_mono_float_waveform(clip), source_rate), num_segments)
            for clip in clips
        ]
        if not is_batch:
            data = {"input_features": examples[0]}
            if return_attention_mask if return_attention_mask is not None else self.return_attention_mask:
                data["attention_mask"] = np.ones(len(examples[0]), dtype=np.int64)
            return BatchFeature(data, tensor_type=return_tensors)

        max_examples = max(len(clip_examples) for clip_examples in examples)
        features = np.full(
            (len(examples), max_examples, *examples[0].shape[1:]), self.padding_value, dtype=np.float32
        )
        attention_mask = np.zeros((len(examples), max_examples), dtype=np.int64)
        for index, clip_examples in enumerate(examples):
            features[index, : len(clip_examples)] = clip_examples
            attention_mask[index, : len(clip_examples)] = 1
        return BatchFeature(
            {"input_features": features, "attention_mask": attention_mask}, tensor_type=return_tensors
        )

    def resample(self, waveform: np.ndarray, source_rate: int) -> np.ndarray:
        """Resample a float waveform from `source_rate` to `sampling_rate` (`scipy.signal.resample_poly`)."""
        if source_rate == self.sampling_rate:
            return waveform
        divisor = math.gcd(source_rate, self.sampling_rate)
        return resample_poly(waveform, self.sampling_rate // divisor, source_rate // divisor)


__all__ = ["VGGishFeatureExtractor"]
