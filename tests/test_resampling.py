"""Resampling to 16 kHz: log-mels within 0.05 of the VGGish reference pipeline (resampy, as torchvggish)
in every mel band, and long audio resampled piece by piece equal to the whole waveform."""

import numpy as np
import pytest
import resampy

from avs_models.models.resampling import band_limited_resample, resampled_span, resampling_ratio
from avs_models.models.vggish import VGGishFeatureExtractor

REFERENCE_TOLERANCE = 0.05


def broadband(rate: int, seconds: float = 3.0) -> np.ndarray:
    """White noise plus a chirp sweeping up to the Nyquist frequency: energy in every mel band and
    around the resampler's cut-off, where resamplers differ most."""
    rng = np.random.default_rng(rate)
    time = np.arange(int(seconds * rate)) / rate
    top = rate / 2
    chirp = 0.3 * np.sin(2 * np.pi * (50 * time + (top - 50) / (2 * seconds) * time**2))
    return 0.1 * rng.standard_normal(len(time)) + chirp


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_log_mel_matches_the_reference_pipeline_in_every_band(rate):
    extractor = VGGishFeatureExtractor()
    waveform = broadband(rate)
    ours = extractor.log_mel_spectrogram(extractor.resample(waveform, rate))
    reference = extractor.log_mel_spectrogram(resampy.resample(waveform, rate, 16000))
    assert ours.shape == reference.shape
    per_band = np.abs(ours - reference).max(axis=0)
    assert per_band.shape == (64,)
    assert per_band.max() < REFERENCE_TOLERANCE, (
        f"largest difference {per_band.max():.4f} in band {per_band.argmax()}"
    )
    # The features the model sees (examples of 96 frames) agree as well.
    ours_examples = extractor(waveform, sampling_rate=rate)["input_features"]
    reference_examples = extractor(resampy.resample(waveform, rate, 16000), sampling_rate=16000)[
        "input_features"
    ]
    np.testing.assert_allclose(ours_examples, reference_examples, atol=REFERENCE_TOLERANCE)


def test_eight_kilohertz_audio_leaves_no_energy_above_its_band():
    # Upsampled 8 kHz audio has nothing above 4 kHz: the top mel bands stay at the silence floor.
    extractor = VGGishFeatureExtractor()
    log_mel = extractor.log_mel_spectrogram(extractor.resample(broadband(8000), 8000))
    top_bands = log_mel[:, 52:]  # centres above ~4.6 kHz
    assert top_bands.max() < np.log(0.01) + 0.5


@pytest.mark.parametrize("rate", [8000, 44100, 48000, 44101])
def test_pieces_equal_the_whole_waveform(rate):
    waveform = np.random.default_rng(1).standard_normal(int(2.5 * rate))
    whole = band_limited_resample(waveform, rate, 16000)

    def read(first: int, stop: int) -> np.ndarray:
        out = np.zeros(stop - first)
        low, high = max(first, 0), min(stop, len(waveform))
        if high > low:
            out[low - first : high - first] = waveform[low:high]
        return out

    pieces = [resampled_span(read, start, 16000, rate, 16000) for start in range(0, 32000, 16000)]
    np.testing.assert_allclose(np.concatenate(pieces), whole[:32000], atol=1e-12)
    np.testing.assert_allclose(resampled_span(read, 12345, 777, rate, 16000), whole[12345:13122], atol=1e-12)


def test_ratio_terms_stay_bounded():
    assert resampling_ratio(48000, 16000) == (1, 3)
    assert resampling_ratio(44100, 16000) == (160, 441)
    up, down = resampling_ratio(44101, 16000)
    assert max(up, down) <= 4096 and abs(up / down - 16000 / 44101) < 1e-7
