"""Feature extractor of BEATs: a waveform becomes `[T, 16000]` one-second 16 kHz segments.

BEATs computes its Kaldi fbank inside the model, so the extractor only prepares the waveform:
mono, 16 kHz, float in [-1, 1], cut into one segment per second (one per video frame in AVS).
"""

from __future__ import annotations

from ..audio_utils import WaveformSegmentFeatureExtractor


class BeatsFeatureExtractor(WaveformSegmentFeatureExtractor):
    r"""Turns waveforms into the one-second segments [`BeatsModel`] takes as `input_values`.

    A clip of `T` whole seconds at 16 kHz gives `[T, 16000]`; a trailing partial second is dropped
    unless `num_segments` is given. Audio at another rate is resampled to 16 kHz with a
    band-limited windowed-sinc filter (`models.resampling`; C3N resamples with librosa when it loads the wav, so resampled
    audio can differ slightly from its input; 16 kHz audio is used as is). See
    [`WaveformSegmentFeatureExtractor`] for the arguments.
    """


__all__ = ["BeatsFeatureExtractor"]
