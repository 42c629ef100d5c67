"""Feature extractor of VGGish: a waveform becomes `[T, 1, 96, 64]` log-mel examples."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from ..audio_utils import SegmentFeatureExtractor, validated_count

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


class VGGishFeatureExtractor(SegmentFeatureExtractor):
    r"""Turns waveforms into the log-mel examples VGGish expects.

    The front end of the reference VGGish (its `waveform_to_examples`): 16 kHz mono audio, a 25 ms
    periodic Hann window every 10 ms, |FFT| of length 512, 64 HTK-mel bands between 125 and
    7500 Hz, `log(mel + 0.01)`, then non-overlapping examples of 96 frames (one per 0.96 s).
    The computation runs in float64 and matches the reference to about 1e-6.

    Audio at another rate is resampled to 16 kHz with the reference's own band-limited filter
    (resampy's `kaiser_best`, `models.resampling`): features of resampled audio are within about
    0.01 of the reference's in every mel band; 16 kHz input is used as is and matches it. Multi-channel audio is
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
        self.num_segments = validated_count("num_segments", num_segments, optional=True)
        # Not serialised (FeatureExtractionMixin.to_dict drops `window` and `mel_filters`).
        self.window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(window_length) / window_length)
        self.mel_filters = htk_mel_weights(
            feature_size, fft_length // 2 + 1, sampling_rate, min_frequency, max_frequency
        )

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

    def waveform_to_segments(self, waveform: np.ndarray, num_segments: int | None = None) -> np.ndarray:
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


__all__ = ["VGGishFeatureExtractor"]
