"""Configuration of PANNs Cnn14, the AudioSet-trained audio classifier C3N uses as one of its audio encoders."""

from transformers import PreTrainedConfig

from ..audio_utils import validated_count
from ..hub_code import HubConfigMixin


class PannsConfig(HubConfigMixin, PreTrainedConfig):
    r"""Configuration of [`PannsModel`] and [`PannsForAudioClassification`].

    The defaults describe `Cnn14_16k` of the PANNs release (checkpoint `Cnn14_16k_mAP=0.438.pth`),
    the variant C3N uses: a log-mel front end (STFT of 512 samples every 10 ms at 16 kHz, 64 Slaney
    mel bands between 50 and 8000 Hz, power in dB), batch norm over the mel bands, six convolution
    blocks (two 3x3 convolutions with batch norm and ReLU, then a 2x2 average pool; the last block
    does not pool), mean over mel bands, max + mean over time, a fully connected layer with ReLU
    (the 2048-d embedding) and a linear AudioSet-527 classifier.

    Attributes:
        sample_rate (`int`, defaults to 16000):
            Rate of the waveforms the model takes, in Hz.
        window_size (`int`, defaults to 512):
            STFT window (periodic Hann) and FFT length, in samples.
        hop_size (`int`, defaults to 160):
            STFT hop, in samples (10 ms at 16 kHz).
        num_mel_bins (`int`, defaults to 64):
            Mel bands of the log-mel spectrogram.
        fmin (`float`, defaults to 50.0):
            Lower edge of the mel filter bank, in Hz.
        fmax (`float`, defaults to 8000.0):
            Upper edge of the mel filter bank, in Hz (at most the Nyquist frequency).
        amin (`float`, defaults to 1e-10):
            Floor of the mel power before the conversion to dB (`10 * log10(max(power, amin))`).
        block_channels (`list[int]`, defaults to `[64, 128, 256, 512, 1024, 2048]`):
            Output channels of the convolution blocks. Every block but the last halves both the
            time and the mel axis (2x2 average pool, rounding down).
        embedding_size (`int`, defaults to 2048):
            Width of the embedding (the fully connected layer after pooling).
        hidden_dropout (`float`, defaults to 0.2):
            Dropout after every convolution block (training mode only).
        embedding_dropout (`float`, defaults to 0.5):
            Dropout before the embedding layer and on the returned embedding (training mode only).
        batch_norm_eps (`float`, defaults to 1e-5):
            Epsilon of all batch normalisations.
        num_labels (`int`, defaults to 527):
            Classes of the classifier of [`PannsForAudioClassification`] (527 AudioSet classes).
    """

    model_type = "panns_cnn14"

    sample_rate: int = 16000
    window_size: int = 512
    hop_size: int = 160
    num_mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 8000.0
    amin: float = 1e-10
    block_channels: list[int] | tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    embedding_size: int = 2048
    hidden_dropout: float = 0.2
    embedding_dropout: float = 0.5
    batch_norm_eps: float = 1e-5

    def __post_init__(self, **kwargs):
        if self.id2label is None:
            kwargs.setdefault("num_labels", 527)  # the AudioSet ontology
        self.block_channels = [int(channels) for channels in self.block_channels]
        for name in ("sample_rate", "window_size", "hop_size", "num_mel_bins", "embedding_size"):
            setattr(self, name, validated_count(name, getattr(self, name)))
        if not self.block_channels or any(channels < 1 for channels in self.block_channels):
            raise ValueError(
                f"`block_channels` must be a non-empty list of positive integers, got {self.block_channels}"
            )
        nyquist = self.sample_rate / 2
        if not 0.0 <= self.fmin < self.fmax <= nyquist:
            raise ValueError(
                f"mel band edges must satisfy 0 <= fmin < fmax <= sample_rate / 2 ({nyquist} Hz), "
                f"got fmin={self.fmin}, fmax={self.fmax}"
            )
        if self.num_mel_bins < self.downsampling:
            raise ValueError(
                f"`num_mel_bins` ({self.num_mel_bins}) must be at least 2 ** (len(block_channels) - 1) = "
                f"{self.downsampling}: every block but the last halves the mel axis"
            )
        if self.amin <= 0:
            raise ValueError(f"`amin` must be positive, got {self.amin}")
        for name in ("hidden_dropout", "embedding_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}")
        super().__post_init__(**kwargs)

    @property
    def downsampling(self) -> int:
        """Factor by which the convolution blocks shrink the time and mel axes (32 for Cnn14)."""
        return 2 ** (len(self.block_channels) - 1)

    @property
    def num_frequency_bins(self) -> int:
        """STFT bins from 0 Hz to Nyquist (257 for a 512-sample window)."""
        return self.window_size // 2 + 1

    @property
    def min_num_samples(self) -> int:
        """Shortest waveform the model takes: enough STFT frames for every pool and for reflect padding."""
        frames_needed = self.hop_size * (self.downsampling - 1)
        return max(frames_needed, self.window_size // 2 + 1)


__all__ = ["PannsConfig"]
