"""Feature extractor of PANNs Cnn14: a waveform becomes `[T, 16000]` one-second segments at 16 kHz."""

from __future__ import annotations

from ..audio_utils import WaveformSegmentFeatureExtractor


class PannsFeatureExtractor(WaveformSegmentFeatureExtractor):
    r"""Cuts waveforms into the fixed-length segments Cnn14 takes (the log-mel front end is in the model).

    One segment per video frame: with the defaults a clip of T seconds at 16 kHz gives `[T, 16000]`,
    as the C3N data loader does (it loads 5 s, pads with zeros or trims, and reshapes to `[5, 16000]`).
    Without `num_segments` an incomplete last segment is dropped.

    Audio at another rate is resampled to `sampling_rate` with a band-limited windowed-sinc filter
    (`models.resampling`). The C3N
    code lets `librosa.load` resample (soxr by default), so segments of resampled audio can differ
    slightly from the official ones; audio already at `sampling_rate` is used as is. See
    [`WaveformSegmentFeatureExtractor`] for the arguments.
    """


__all__ = ["PannsFeatureExtractor"]
