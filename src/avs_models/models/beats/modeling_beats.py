"""BEATs: an AudioSet-trained audio Transformer over 16x16 patches of a Kaldi log-mel fbank.

`BeatsModel` takes 16 kHz waveforms `[N, samples]` (or `[B, T, samples]`), computes the Kaldi
fbank itself (as the official model does), embeds 16x16 patches, adds a convolutional positional
embedding and runs a Transformer whose attention carries a gated, bucketed relative position
bias. Its `embeddings` are the mean of the last hidden states over tokens.
`BeatsForAudioClassification` adds the AudioSet-527 predictor: one linear layer applied to every
token, averaged over tokens (the logits C3N reads).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from ..audio_utils import flatten_waveforms, keep_hidden_state, multi_label_loss, with_leading_dims
from ..hub_code import HubModelMixin
from .configuration_beats import BeatsConfig

# Kaldi fbank settings of BEATs (torchaudio's `kaldi.fbank` defaults, which BEATs keeps): no dither,
# DC offset removed per frame, pre-emphasis, "povey" window, power spectrum, mel bands from 20 Hz
# to Nyquist, log floored at float32 epsilon, only frames that fit whole (snip_edges).
KALDI_PREEMPHASIS = 0.97
KALDI_POVEY_EXPONENT = 0.85
KALDI_LOW_FREQUENCY = 20.0
KALDI_LOG_FLOOR = torch.finfo(torch.float32).eps
# Kaldi's mel scale (the HTK one): mel = 1127 * ln(1 + f / 700).
KALDI_MEL_FACTOR = 1127.0
KALDI_MEL_BREAK_HZ = 700.0
# The gate of the relative position bias reads 8 projections of each query, summed in 2 groups of 4.
GATE_PROJECTIONS = 8


@dataclass
class BeatsModelOutput(ModelOutput):
    """Output of [`BeatsModel`].

    Attributes:
        last_hidden_state (`torch.FloatTensor` of shape `[N, tokens, hidden_size]` or `[B, T, tokens, hidden_size]`):
            Encoder output per patch token; tokens are time-major (`num_mel_bins // patch_size` per
            `patch_size` frames: 6 x 8 = 48 tokens for one second).
        embeddings (`torch.FloatTensor` of shape `[N, hidden_size]` or `[B, T, hidden_size]`):
            Mean of `last_hidden_state` over tokens: the audio features C3N consumes.
        hidden_states (`tuple[torch.FloatTensor]`, *optional*):
            Input of the first layer and output of every layer (before the final layer norm of
            pre-norm models), each shaped like `last_hidden_state`; with `output_hidden_states=True`.
            They are the tensors the forward used, so gradients reach them.
        attentions (`tuple[torch.FloatTensor]`, *optional*):
            Attention probabilities of every layer, `[..., heads, tokens, tokens]` (softmax over the
            keys, position bias included); with `output_attentions=True`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class BeatsAudioClassifierOutput(ModelOutput):
    """Output of [`BeatsForAudioClassification`].

    Attributes:
        loss (`torch.FloatTensor` of shape `[]`, *optional*):
            Multi-label binary cross-entropy, when `labels` are given.
        logits (`torch.FloatTensor` of shape `[N, num_labels]` or `[B, T, num_labels]`):
            AudioSet class logits: the per-token predictor outputs averaged over tokens (apply a
            sigmoid for per-class probabilities).
        embeddings (`torch.FloatTensor` of shape `[N, hidden_size]` or `[B, T, hidden_size]`):
            Mean of the last hidden states over tokens, as in [`BeatsModelOutput`].
        hidden_states (`tuple[torch.FloatTensor]`, *optional*): as in [`BeatsModelOutput`].
        attentions (`tuple[torch.FloatTensor]`, *optional*): as in [`BeatsModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# ---------------------------------------------------------------- Kaldi fbank


def hertz_to_kaldi_mel(frequencies: torch.Tensor | float) -> torch.Tensor | float:
    """Kaldi's mel scale of a frequency in Hz (a float64 scalar or a tensor in its own dtype)."""
    if isinstance(frequencies, torch.Tensor):
        return KALDI_MEL_FACTOR * torch.log(1.0 + frequencies / KALDI_MEL_BREAK_HZ)
    return KALDI_MEL_FACTOR * math.log(1.0 + frequencies / KALDI_MEL_BREAK_HZ)


@functools.cache
def kaldi_mel_banks(num_mel_bins: int, fft_size: int, sampling_rate: int, device: str) -> torch.Tensor:
    """Kaldi's triangular mel filters, `[fft_size // 2 + 1, num_mel_bins]` float32.

    The triangles are linear in mel, their edges evenly spaced in mel between 20 Hz and Nyquist;
    the Nyquist bin gets no weight (Kaldi only spans bins `0 .. fft_size // 2 - 1`). Like Kaldi
    (and torchaudio), the mel values of the FFT bins and the edges are float32, which matters
    for the narrow low-frequency bands.
    """
    low_mel = hertz_to_kaldi_mel(KALDI_LOW_FREQUENCY)
    mel_step = (hertz_to_kaldi_mel(sampling_rate / 2) - low_mel) / (num_mel_bins + 1)
    band = torch.arange(num_mel_bins, dtype=torch.float32)
    lower, center, upper = (low_mel + (band + offset) * mel_step for offset in (0.0, 1.0, 2.0))
    bin_mels = hertz_to_kaldi_mel(
        torch.arange(fft_size // 2, dtype=torch.float32) * (sampling_rate / fft_size)
    )
    bin_mels = bin_mels[:, None]
    rising = (bin_mels - lower) / (center - lower)
    falling = (upper - bin_mels) / (upper - center)
    weights = torch.minimum(rising, falling).clamp(min=0.0)
    weights = F.pad(weights, (0, 0, 0, 1))  # the Nyquist bin
    return weights.to(device)


@functools.cache
def povey_window(length: int, device: str) -> torch.Tensor:
    """Kaldi's "povey" window: a symmetric Hann window raised to the power 0.85 (float32)."""
    return torch.hann_window(length, periodic=False, device=device).pow(KALDI_POVEY_EXPONENT)


def kaldi_fbank(
    waveforms: torch.Tensor, sampling_rate: int, num_mel_bins: int, frame_length: int, frame_shift: int
) -> torch.Tensor:
    """Kaldi log-mel fbank (the `compute-fbank-feats` defaults BEATs uses) of `[N, samples]` waveforms.

    Returns `[N, frames, num_mel_bins]` float32 with `frames = 1 + (samples - frame_length) // frame_shift`.
    """
    waveforms = waveforms.float()
    device = str(waveforms.device)
    frames = waveforms.unfold(-1, frame_length, frame_shift)
    frames = frames - frames.mean(dim=-1, keepdim=True)
    # Pre-emphasis x[i] - 0.97 x[i - 1] within each frame, the first sample being its own predecessor.
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = (frames - KALDI_PREEMPHASIS * previous) * povey_window(frame_length, device)
    fft_size = 1 << (frame_length - 1).bit_length()  # next power of two, 512 for 400 samples
    power = torch.fft.rfft(frames, n=fft_size).abs().pow(2)
    mel_energies = power @ kaldi_mel_banks(num_mel_bins, fft_size, sampling_rate, device)
    return mel_energies.clamp(min=KALDI_LOG_FLOOR).log()


# ---------------------------------------------------------------- modules


class BeatsPatchEmbedding(nn.Module):
    """16x16 patches of the fbank -> layer norm -> projection to `hidden_size` (time-major tokens)."""

    def __init__(self, config: BeatsConfig):
        super().__init__()
        self.convolution = nn.Conv2d(
            1,
            config.patch_embedding_dim,
            kernel_size=config.patch_size,
            stride=config.patch_size,
            bias=config.patch_embedding_bias,
        )
        self.layer_norm = nn.LayerNorm(config.patch_embedding_dim, eps=config.layer_norm_eps)
        self.projection = (
            nn.Linear(config.patch_embedding_dim, config.hidden_size)
            if config.patch_embedding_dim != config.hidden_size
            else None
        )
        self.dropout = nn.Dropout(config.input_dropout)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """`[N, frames, mel]` -> `[N, (frames // patch) * (mel // patch), hidden_size]`."""
        patches = self.convolution(fbank[:, None]).flatten(2).transpose(1, 2)
        patches = self.layer_norm(patches)
        if self.projection is not None:
            patches = self.projection(patches)
        return self.dropout(patches)


class BeatsPositionalConvEmbedding(nn.Module):
    """Grouped 1-D convolution over tokens, weight-normalised over the kernel axis, then GELU.

    The weight is `weight_direction * weight_magnitude / ||weight_direction||`, the norm taken over
    the output and input channels (one per kernel position): the official `weight_v` / `weight_g`
    parametrisation. The even kernel is padded by half its size on both sides and the extra last
    output is dropped.
    """

    def __init__(self, config: BeatsConfig):
        super().__init__()
        kernel_size = config.positional_conv_kernel_size
        self.groups = config.positional_conv_groups
        self.weight_magnitude = nn.Parameter(torch.ones(1, 1, kernel_size))
        self.weight_direction = nn.Parameter(
            torch.empty(config.hidden_size, config.hidden_size // self.groups, kernel_size)
        )
        self.bias = nn.Parameter(torch.zeros(config.hidden_size))

    def weight(self) -> torch.Tensor:
        return self.weight_direction * (
            self.weight_magnitude / torch.linalg.vector_norm(self.weight_direction, dim=(0, 1), keepdim=True)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`[N, tokens, C]` -> `[N, tokens, C]`."""
        num_tokens = hidden_states.shape[1]
        kernel_size = self.weight_direction.shape[-1]
        convolved = F.conv1d(
            hidden_states.transpose(1, 2),
            self.weight(),
            self.bias,
            padding=kernel_size // 2,
            groups=self.groups,
        )
        return F.gelu(convolved[..., :num_tokens]).transpose(1, 2)


def relative_position_buckets(
    num_tokens: int, num_buckets: int, max_distance: int, device: torch.device
) -> torch.Tensor:
    """Bucket of every (query, key) pair, `[tokens, tokens]` int64.

    Half of the buckets are for keys after the query, half for the others. Within a half, short
    distances get one bucket each and longer ones share buckets on a log scale up to
    `max_distance`; anything farther falls in the last bucket.
    """
    positions = torch.arange(num_tokens, device=device)
    relative = positions[None, :] - positions[:, None]
    half = num_buckets // 2
    exact = half // 2
    distance = relative.abs()
    logarithmic = exact + (
        torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (half - exact)
    ).to(torch.long)
    logarithmic = logarithmic.clamp(max=half - 1)
    return (relative > 0).long() * half + torch.where(distance < exact, distance, logarithmic)


class BeatsRelativePositionBias(nn.Module):
    """Learned per-head bias for each relative position bucket; one table shared by all layers."""

    def __init__(self, config: BeatsConfig):
        super().__init__()
        self.num_buckets = config.relative_position_buckets
        self.max_distance = config.relative_position_max_distance
        self.embedding = nn.Embedding(self.num_buckets, config.num_attention_heads)

    def forward(self, num_tokens: int, device: torch.device) -> torch.Tensor:
        """-> `[heads, tokens, tokens]`, the buckets built on `device` (the hidden states' device)."""
        buckets = relative_position_buckets(num_tokens, self.num_buckets, self.max_distance, device)
        return self.embedding(buckets).permute(2, 0, 1)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    leading_dims: tuple[int, ...] | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit softmax attention: `[N, heads, tokens, head_dim]` -> `[N, tokens, heads, head_dim]` and
    the probabilities `[*leading_dims, heads, tokens, tokens]` (`leading_dims` defaults to `(N,)`).

    `attention_mask` is the additive position bias. The probabilities are returned with the input's
    leading dims, and the attention continues from that very tensor (see `with_leading_dims`), so
    gradients reach the returned maps.
    """
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probabilities = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    returned, probabilities = with_leading_dims(probabilities, leading_dims or tuple(query.shape[:1]))
    probabilities = F.dropout(probabilities, p=dropout, training=module.training)
    return torch.matmul(probabilities, value).transpose(1, 2), returned


class BeatsAttention(nn.Module):
    """Multi-head self-attention with an additive (optionally query-gated) relative position bias.

    The gate of each query `q` (its head's slice of the query projection, before scaling) is
    `a * (b * gate_scale - 1) + 2` with `a, b = sigmoid` of two sums of four projections of `q`;
    it multiplies that query's row of the position bias.

    The attention function is Transformers' `config._attn_implementation`: `"sdpa"` (the default,
    `F.scaled_dot_product_attention`) or `"eager"` (`eager_attention_forward`). Returning the
    attention probabilities needs the explicit softmax, so `output_attentions=True` always runs eager.
    """

    is_causal = False

    def __init__(self, config: BeatsConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.gated = config.gated_relative_position_bias
        if self.gated:
            self.gate_projection = nn.Linear(self.head_dim, GATE_PROJECTIONS)
            self.gate_scale = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))

    def _split_heads(self, projected: torch.Tensor) -> torch.Tensor:
        batch, num_tokens, _ = projected.shape
        return projected.view(batch, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_bias: torch.Tensor | None = None,
        output_attentions: bool = False,
        leading_dims: tuple[int, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`[N, tokens, C]` (and a `[heads, tokens, tokens]` bias) -> `[N, tokens, C]`, and with
        `output_attentions` the probabilities `[*leading_dims, heads, tokens, tokens]`."""
        query = self._split_heads(self.q_proj(hidden_states))
        key = self._split_heads(self.k_proj(hidden_states))
        value = self._split_heads(self.v_proj(hidden_states))
        bias = None
        if position_bias is not None:
            bias = position_bias[None]
            if self.gated:
                batch, heads, num_tokens, _ = query.shape
                gate_logits = self.gate_projection(query).view(
                    batch, heads, num_tokens, 2, GATE_PROJECTIONS // 2
                )
                gate_a, gate_b = torch.sigmoid(gate_logits.sum(dim=-1)).chunk(2, dim=-1)
                bias = (gate_a * (gate_b * self.gate_scale - 1.0) + 2.0) * bias
            bias = bias.to(query.dtype)
        attention_function = eager_attention_forward
        if not output_attentions:
            attention_function = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        attended, probabilities = attention_function(
            self,
            query,
            key,
            value,
            bias,
            scaling=self.head_dim**-0.5,
            dropout=self.dropout if self.training else 0.0,
            leading_dims=leading_dims,
        )
        output = self.out_proj(attended.flatten(2))
        return output, probabilities if output_attentions else None


class BeatsEncoderLayer(GradientCheckpointingLayer):
    """Attention and feed-forward blocks, post-norm with deep-norm residual scaling or pre-norm (the
    unit that gradient checkpointing recomputes)."""

    def __init__(self, config: BeatsConfig):
        super().__init__()
        self.attention = BeatsAttention(config)
        self.attention_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.activation_dropout = nn.Dropout(config.activation_dropout)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm_first = config.layer_norm_first
        # Deep norm: post-norm residuals scaled by (2 * layers) ** (1/4) to keep deep stacks stable.
        self.residual_scale = (2 * config.num_hidden_layers) ** 0.25 if config.deep_norm else 1.0

    def feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.activation_dropout(self.activation(self.fc1(hidden_states)))))

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_bias: torch.Tensor | None,
        output_attentions: bool = False,
        leading_dims: tuple[int, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> the layer output `[N, tokens, C]` and, with `output_attentions`, its attention probabilities."""
        if self.layer_norm_first:
            attended, attentions = self.attention(
                self.attention_layer_norm(hidden_states), position_bias, output_attentions, leading_dims
            )
            hidden_states = hidden_states + self.dropout(attended)
            return hidden_states + self.feed_forward(self.final_layer_norm(hidden_states)), attentions
        attended, attentions = self.attention(hidden_states, position_bias, output_attentions, leading_dims)
        hidden_states = self.attention_layer_norm(hidden_states * self.residual_scale + self.dropout(attended))
        hidden_states = self.final_layer_norm(
            hidden_states * self.residual_scale + self.feed_forward(hidden_states)
        )
        return hidden_states, attentions


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; multiplies the gradient by `scale` (layer-wise gradient decay)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return tensor.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


class BeatsEncoder(nn.Module):
    """Positional convolution, layer norm (post-norm models) and the Transformer layers."""

    def __init__(self, config: BeatsConfig):
        super().__init__()
        self.positional_embedding = BeatsPositionalConvEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.relative_position_bias = (
            BeatsRelativePositionBias(config) if config.use_relative_position_bias else None
        )
        self.layers = nn.ModuleList(BeatsEncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.layer_norm_first = config.layer_norm_first
        self.layerdrop = config.layerdrop
        self.layer_gradient_decay = config.layer_gradient_decay

    def forward(
        self,
        hidden_states: torch.Tensor,
        leading_dims: tuple[int, ...],
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor | None, ...] | None]:
        """`[N, tokens, C]` -> the last hidden state, and (when asked) every layer's input/output and
        attention probabilities with the input's `leading_dims` (`None` for a layer skipped by layerdrop)."""
        hidden_states = hidden_states + self.positional_embedding(hidden_states)
        if not self.layer_norm_first:
            hidden_states = self.layer_norm(hidden_states)
        hidden_states = self.dropout(hidden_states)
        position_bias = (
            self.relative_position_bias(hidden_states.shape[1], hidden_states.device)
            if self.relative_position_bias is not None
            else None
        )
        all_hidden_states = [] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        hidden_states = keep_hidden_state(hidden_states, leading_dims, all_hidden_states)
        for layer in self.layers:
            if self.layer_gradient_decay != 1.0 and hidden_states.requires_grad:
                hidden_states = _ScaleGradient.apply(hidden_states, self.layer_gradient_decay)
            attentions = None
            if not (self.training and torch.rand(()) < self.layerdrop):
                # Positional tensors: reentrant gradient checkpointing only passes gradients to those.
                hidden_states, attentions = layer(
                    hidden_states, position_bias, output_attentions=output_attentions, leading_dims=leading_dims
                )
            hidden_states = keep_hidden_state(hidden_states, leading_dims, all_hidden_states)
            if output_attentions:
                all_attentions.append(attentions)
        if self.layer_norm_first:
            hidden_states = self.layer_norm(hidden_states)
        return (
            hidden_states,
            tuple(all_hidden_states) if output_hidden_states else None,
            tuple(all_attentions) if output_attentions else None,
        )


# ---------------------------------------------------------------- models


class BeatsPreTrainedModel(HubModelMixin, PreTrainedModel):
    config_class = BeatsConfig
    base_model_prefix = "beats"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["BeatsEncoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, BeatsPositionalConvEmbedding):
            kernel_size = module.weight_direction.shape[-1]
            init.normal_(
                module.weight_direction,
                mean=0.0,
                std=math.sqrt(4.0 / (kernel_size * module.weight_direction.shape[0])),
            )
            init.copy_(
                module.weight_magnitude,
                torch.linalg.vector_norm(module.weight_direction, dim=(0, 1), keepdim=True),
            )
            init.zeros_(module.bias)
        elif isinstance(module, BeatsAttention) and module.gated:
            init.ones_(module.gate_scale)


class BeatsModel(BeatsPreTrainedModel):
    """The BEATs encoder: waveforms -> patch-token hidden states and their mean (`embeddings`).

    Every waveform is encoded on its own and entirely: there is no padding mask, so pass
    equal-length segments (one second each, as [`BeatsFeatureExtractor`] gives).
    """

    def __init__(self, config: BeatsConfig):
        super().__init__(config)
        self.patch_embedding = BeatsPatchEmbedding(config)
        self.encoder = BeatsEncoder(config)
        self.post_init()

    def fbank_features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Normalised Kaldi fbank of `[N, samples]` waveforms in [-1, 1]: `[N, frames, num_mel_bins]` float32.

        Always computed in float32, also under autocast (the power spectrum of 16-bit sample
        values overflows half precision).
        """
        config = self.config
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            fbank = kaldi_fbank(
                waveforms.float() * config.waveform_scale,
                config.sampling_rate,
                config.num_mel_bins,
                config.frame_length,
                config.frame_shift,
            )
        return (fbank - config.fbank_mean) / (2 * config.fbank_std)

    def forward(
        self,
        input_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BeatsModelOutput | tuple:
        """
        Args:
            input_values (`torch.FloatTensor` of shape `[N, samples]` or `[B, T, samples]`):
                16 kHz mono waveforms in [-1, 1], e.g. the one-second segments of
                [`BeatsFeatureExtractor`]; at least 2800 samples each.
            output_hidden_states (`bool`, *optional*): also return every layer's hidden states;
                defaults to `config.output_hidden_states`.
            output_attentions (`bool`, *optional*): also return every layer's attention
                probabilities; defaults to `config.output_attentions`.

        Returns:
            [`BeatsModelOutput`] with `last_hidden_state` `[..., tokens, hidden_size]` and
            `embeddings` `[..., hidden_size]` (48 tokens for one second of audio).
        """
        config = self.config
        waveforms, leading_dims = flatten_waveforms(input_values, config.min_num_samples, config.sampling_rate)
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        return_dict = config.return_dict if return_dict is None else return_dict
        tokens = self.patch_embedding(self.fbank_features(waveforms).to(self.dtype))
        last_hidden_state, hidden_states, attentions = self.encoder(
            tokens, leading_dims, output_hidden_states=output_hidden_states, output_attentions=output_attentions
        )
        last_hidden_state = last_hidden_state.reshape(*leading_dims, *last_hidden_state.shape[1:])
        output = BeatsModelOutput(
            last_hidden_state=last_hidden_state,
            embeddings=last_hidden_state.mean(dim=-2),
            hidden_states=hidden_states,
            attentions=attentions,
        )
        return output if return_dict else output.to_tuple()


class BeatsForAudioClassification(BeatsPreTrainedModel):
    """BEATs with its AudioSet-527 predictor: waveforms -> class logits and embeddings.

    The predictor is applied to every token and its outputs are averaged over tokens, as the
    official fine-tuned model (and C3N) does.
    """

    def __init__(self, config: BeatsConfig):
        super().__init__(config)
        self.beats = BeatsModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BeatsAudioClassifierOutput | tuple:
        """
        Args:
            input_values (`torch.FloatTensor` of shape `[N, samples]` or `[B, T, samples]`):
                16 kHz mono waveforms in [-1, 1] (see [`BeatsModel`]).
            labels (`torch.FloatTensor` of shape `[N, num_labels]` or `[B, T, num_labels]`, *optional*):
                Multi-hot targets; gives a binary cross-entropy `loss`.
            output_hidden_states (`bool`, *optional*): also return every layer's hidden states.
            output_attentions (`bool`, *optional*): also return every layer's attention probabilities.

        Returns:
            [`BeatsAudioClassifierOutput`] with `logits` `[..., num_labels]` and `embeddings` `[..., hidden_size]`.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        encoded = self.beats(
            input_values,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        token_logits = self.classifier(self.dropout(encoded.last_hidden_state))
        logits = token_logits.mean(dim=-2)

        loss = multi_label_loss(logits, labels) if labels is not None else None
        output = BeatsAudioClassifierOutput(
            loss=loss,
            logits=logits,
            embeddings=encoded.embeddings,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "BeatsAudioClassifierOutput",
    "BeatsForAudioClassification",
    "BeatsModel",
    "BeatsModelOutput",
    "BeatsPreTrainedModel",
]
