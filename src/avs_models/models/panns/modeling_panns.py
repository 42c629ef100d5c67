"""PANNs Cnn14: the AudioSet-trained CNN over log-mel spectrograms (one 2048-d embedding per waveform).

`PannsModel` maps waveforms `[N, samples]` (or `[B, T, samples]`, e.g. T one-second segments per
clip) to embeddings; the log-mel front end (STFT as a convolution with fixed DFT kernels, Slaney
mel filter bank, power in dB) is part of the model, as in the PANNs release.
`PannsForAudioClassification` adds the linear AudioSet-527 classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ..audio_utils import flatten_waveforms, keep_hidden_state, multi_label_loss
from ..hub_code import HubModelMixin
from .configuration_panns import PannsConfig

# Slaney's mel scale (librosa's default, `htk=False`): linear below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_LOG_START_HZ = 1000.0
_SLANEY_LOG_START_MEL = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def hertz_to_mel_slaney(frequencies_hz: np.ndarray | float) -> np.ndarray:
    frequencies_hz = np.asarray(frequencies_hz, dtype=np.float64)
    linear = frequencies_hz / _SLANEY_HZ_PER_MEL
    logarithmic = (
        _SLANEY_LOG_START_MEL
        + np.log(np.maximum(frequencies_hz, _SLANEY_LOG_START_HZ) / _SLANEY_LOG_START_HZ) / _SLANEY_LOG_STEP
    )
    return np.where(frequencies_hz >= _SLANEY_LOG_START_HZ, logarithmic, linear)


def mel_to_hertz_slaney(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    linear = mels * _SLANEY_HZ_PER_MEL
    logarithmic = _SLANEY_LOG_START_HZ * np.exp(
        _SLANEY_LOG_STEP * (np.maximum(mels, _SLANEY_LOG_START_MEL) - _SLANEY_LOG_START_MEL)
    )
    return np.where(mels >= _SLANEY_LOG_START_MEL, logarithmic, linear)


def slaney_mel_filters(
    sample_rate: int, window_size: int, num_mel_bins: int, fmin: float, fmax: float
) -> np.ndarray:
    """Slaney-normalised triangular mel filters, `[window_size // 2 + 1, num_mel_bins]` (float64).

    The filter bank of `librosa.filters.mel` with its defaults (Slaney mel scale, `norm="slaney"`):
    triangles with edges evenly spaced in mel between `fmin` and `fmax`, each scaled by
    2 / (its width in Hz) so that every band has the same area.
    """
    bin_hz = np.linspace(0.0, sample_rate / 2, window_size // 2 + 1)
    edges_hz = mel_to_hertz_slaney(
        np.linspace(hertz_to_mel_slaney(fmin), hertz_to_mel_slaney(fmax), num_mel_bins + 2)
    )
    lower, center, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    rising = (bin_hz[:, None] - lower) / (center - lower)
    falling = (upper - bin_hz[:, None]) / (upper - center)
    return np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))


def hann_dft_kernels(window_size: int) -> np.ndarray:
    """Real and imaginary DFT rows times a periodic Hann window: `[2 * (window_size // 2 + 1), 1, window_size]`.

    Convolving a waveform with these kernels at stride `hop_size` gives the real parts (first half
    of the output channels) and imaginary parts (second half) of its short-time Fourier transform.
    """
    samples = np.arange(window_size)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * samples / window_size)
    # Reduce k * n modulo the window size first, so the angles stay exact for large products.
    phase = np.outer(np.arange(window_size // 2 + 1), samples) % window_size
    angles = 2.0 * np.pi * phase / window_size
    kernels = np.concatenate([np.cos(angles) * window, -np.sin(angles) * window])
    return kernels[:, None, :]


@dataclass
class PannsModelOutput(ModelOutput):
    """Output of [`PannsModel`].

    Attributes:
        embeddings (`torch.FloatTensor` of shape `[N, embedding_size]` or `[B, T, embedding_size]`):
            Cnn14 embeddings (after the ReLU of the embedding layer).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            With `output_hidden_states=True`: the batch-normalised log-mel spectrogram
            `[..., 1, frames, num_mel_bins]` and the output of every convolution block
            `[..., channels, frames', mel_bins']`, with the input's leading dimensions. They are
            the tensors the forward used, so gradients reach them.
    """

    embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class PannsAudioClassifierOutput(ModelOutput):
    """Output of [`PannsForAudioClassification`].

    Attributes:
        loss (`torch.FloatTensor` of shape `[]`, *optional*):
            Multi-label binary cross-entropy, when `labels` are given.
        logits (`torch.FloatTensor` of shape `[N, num_labels]` or `[B, T, num_labels]`):
            AudioSet class logits; their sigmoid is the PANNs `clipwise_output`.
        embeddings (`torch.FloatTensor`): the embeddings, as in [`PannsModelOutput`].
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): as in [`PannsModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class PannsLogMelSpectrogram(nn.Module):
    """Waveforms `[N, samples]` -> log-mel power in dB `[N, 1, frames, num_mel_bins]` (float32).

    STFT with centred frames (reflect padding by half a window), power spectrum, mel filter bank,
    `10 * log10(max(mel, amin))`. The DFT kernels and the mel filters are buffers, so a converted
    checkpoint carries the exact ones of the original model. The front end always runs in float32,
    also in a half-precision model or under autocast: the power of a 512-sample frame overflows
    float16.
    """

    def __init__(self, config: PannsConfig):
        super().__init__()
        self.hop_size = config.hop_size
        self.amin = config.amin
        stft_kernels, mel_filters = self.default_buffers(config)
        self.register_buffer("stft_kernels", stft_kernels)
        self.register_buffer("mel_filters", mel_filters)

    @staticmethod
    def default_buffers(config: PannsConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """The Hann-windowed DFT kernels and the Slaney mel filters that `config` describes (float32)."""
        mel_filters = slaney_mel_filters(
            config.sample_rate, config.window_size, config.num_mel_bins, config.fmin, config.fmax
        )
        return (
            torch.from_numpy(hann_dft_kernels(config.window_size)).float(),
            torch.from_numpy(mel_filters).float(),
        )

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        padding = self.stft_kernels.shape[-1] // 2
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            padded = F.pad(waveforms.float()[:, None, :], (padding, padding), mode="reflect")
            spectrum = F.conv1d(padded, self.stft_kernels.float(), stride=self.hop_size)
            real, imaginary = spectrum.chunk(2, dim=1)
            power = (real**2 + imaginary**2).transpose(1, 2)  # [N, frames, frequency bins]
            mel_power = torch.matmul(power, self.mel_filters.float())
            return 10.0 * torch.log10(mel_power.clamp(min=self.amin))[:, None]


class PannsConvBlock(GradientCheckpointingLayer):
    """Two 3x3 convolutions (no bias), each followed by batch norm and ReLU, then an optional 2x2 average
    pool (the unit that gradient checkpointing recomputes)."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool, eps: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels, eps=eps)
        self.pool = pool

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.relu(self.norm1(self.conv1(hidden_states)))
        hidden_states = F.relu(self.norm2(self.conv2(hidden_states)))
        return F.avg_pool2d(hidden_states, kernel_size=2) if self.pool else hidden_states


class PannsPreTrainedModel(HubModelMixin, PreTrainedModel):
    config_class = PannsConfig
    base_model_prefix = "panns"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["PannsLogMelSpectrogram", "PannsConvBlock"]
    # The front end's DFT kernels and mel filters stay float32 in half-precision models.
    _keep_in_fp32_modules_strict = ["log_mel"]

    def _init_weights(self, module: nn.Module) -> None:
        # PANNs initialises convolutions and linear layers with Xavier-uniform weights and zero biases.
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, PannsLogMelSpectrogram):
            stft_kernels, mel_filters = module.default_buffers(self.config)
            init.copy_(module.stft_kernels, stft_kernels)
            init.copy_(module.mel_filters, mel_filters)
        else:
            super()._init_weights(module)


class PannsModel(PannsPreTrainedModel):
    """The Cnn14 encoder: waveforms -> 2048-d embeddings.

    Spec augmentation and mixup, which the PANNs code applies in training mode only, are not part
    of this model; dropout is (after every block and before the embedding layer, training mode only).
    """

    def __init__(self, config: PannsConfig):
        super().__init__(config)
        self.log_mel = PannsLogMelSpectrogram(config)
        self.mel_norm = nn.BatchNorm2d(config.num_mel_bins, eps=config.batch_norm_eps)
        self.conv_blocks = nn.ModuleList()
        in_channels = 1
        for index, channels in enumerate(config.block_channels):
            is_last = index == len(config.block_channels) - 1
            self.conv_blocks.append(
                PannsConvBlock(in_channels, channels, pool=not is_last, eps=config.batch_norm_eps)
            )
            in_channels = channels
        self.embedding_layer = nn.Linear(in_channels, config.embedding_size)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> PannsModelOutput | tuple:
        """
        Args:
            input_values (`torch.FloatTensor` of shape `[N, samples]` or `[B, T, samples]`):
                Waveforms at `config.sample_rate`, e.g. the one-second segments of
                [`PannsFeatureExtractor`]; at least `config.min_num_samples` samples each.
            output_hidden_states (`bool`, *optional*): also return the log-mel input of the
                blocks and every block's output.

        Returns:
            [`PannsModelOutput`] with `embeddings` `[N, 2048]` or `[B, T, 2048]`.
        """
        waveforms, leading_dims = flatten_waveforms(
            input_values, self.config.min_num_samples, self.config.sample_rate
        )
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        all_hidden_states = [] if output_hidden_states else None
        log_mel = self.log_mel(waveforms).to(self.dtype)
        # Batch norm over the mel bands: they are the channels, so move them to dim 1 and back.
        hidden_states = self.mel_norm(log_mel.transpose(1, 3)).transpose(1, 3)
        hidden_states = keep_hidden_state(hidden_states, leading_dims, all_hidden_states)
        for block in self.conv_blocks:
            hidden_states = F.dropout(
                block(hidden_states), p=self.config.hidden_dropout, training=self.training
            )
            hidden_states = keep_hidden_state(hidden_states, leading_dims, all_hidden_states)

        # Mean over mel bands, then max + mean over time.
        over_time = hidden_states.mean(dim=3)
        pooled = over_time.amax(dim=2) + over_time.mean(dim=2)
        pooled = F.dropout(pooled, p=self.config.embedding_dropout, training=self.training)
        embeddings = F.relu(self.embedding_layer(pooled))

        output = PannsModelOutput(
            embeddings=embeddings.reshape(*leading_dims, -1),
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
        )
        return output if return_dict else output.to_tuple()


class PannsForAudioClassification(PannsPreTrainedModel):
    """Cnn14 with its linear AudioSet-527 classifier: waveforms -> class logits and embeddings.

    `logits` are pre-sigmoid; `torch.sigmoid(logits)` is the `clipwise_output` of the PANNs code.
    The official C3N (PANNs variant) fed that sigmoid, not the logits, to its cognitive consensus
    (C3IM takes a softmax of it), and the `embedding` to its fusion; C3N's
    `audio_score_activation="sigmoid"` reproduces this from `logits`.
    """

    def __init__(self, config: PannsConfig):
        super().__init__(config)
        self.panns = PannsModel(config)
        self.classifier = nn.Linear(config.embedding_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> PannsAudioClassifierOutput | tuple:
        """
        Args:
            input_values (`torch.FloatTensor` of shape `[N, samples]` or `[B, T, samples]`):
                Waveforms at `config.sample_rate` (see [`PannsModel.forward`]).
            labels (`torch.FloatTensor` of shape `[N, num_labels]` or `[B, T, num_labels]`, *optional*):
                Multi-hot targets; gives a binary cross-entropy `loss`.
            output_hidden_states (`bool`, *optional*): also return the encoder's hidden states.

        Returns:
            [`PannsAudioClassifierOutput`] with `logits` `[N, num_labels]` or `[B, T, num_labels]` and
            `embeddings` `[N, 2048]` or `[B, T, 2048]`.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        encoded = self.panns(input_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(encoded.embeddings)

        loss = multi_label_loss(logits, labels) if labels is not None else None
        output = PannsAudioClassifierOutput(
            loss=loss, logits=logits, embeddings=encoded.embeddings, hidden_states=encoded.hidden_states
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "PannsAudioClassifierOutput",
    "PannsForAudioClassification",
    "PannsModel",
    "PannsModelOutput",
    "PannsPreTrainedModel",
]
