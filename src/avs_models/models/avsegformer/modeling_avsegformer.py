"""AVSegFormer: audio-visual segmentation with a deformable-attention transformer (Gao et al., AAAI 2024).

Shapes use `B` clips of `T` frames (one frame per second of audio), `BT = B * T` frames folded
into the batch (the model treats every frame on its own), `C = config.hidden_size`,
`Q = config.num_queries`, `L = config.num_labels`, `S` encoder tokens (the flattened stages 2-4)
and `h x w` for the stride-4 mask feature.

The blocks follow the paper's names: the *transformer encoder* (multi-scale deformable
attention over backbone stages 2-4), the *query generator* (audio-conditioned queries plus
learnable queries), the *transformer decoder* (queries attend to every encoder token), the
*audio-visual mixer* (a channel gate on the mask feature) and the mask prediction head.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import load_backbone
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
    Mask2FormerSinePositionEmbedding,
)
from transformers.utils import ModelOutput

from ..audio_utils import AudioEncoderMixin
from ..auto import sub_model_from_config
from ..hub_code import HubModelMixin
from ..inputs import check_pixel_values, check_shape
from ..labels import IGNORE_INDEX, check_binary_mask, check_class_map, is_semantic_segmentation
from .configuration_avsegformer import AVSegFormerConfig

# The encoder reads the last three backbone stages; the first feeds the mask feature.
NUM_FEATURE_LEVELS = 3
# Smoothing of the official Dice loss, added to each squared sum of the denominator.
DICE_SMOOTHING = 1e-3


@dataclass
class AVSegFormerSegmentationOutput(ModelOutput):
    """Output of [`AVSegFormerForAudioVisualSegmentation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            `mask_loss_weight * mask_loss + mix_loss_weight * mix_loss`, when `labels` are given.
        logits (`torch.FloatTensor` of shape `(B, T, L, H, W)`):
            Mask logits at the input size: sigmoid logits when `L == 1`, class logits otherwise.
        mask_feature (`torch.FloatTensor` of shape `(B, T, C, h, w)`):
            The stride-4 mask feature after the audio-visual mixer (the official forward's second
            output; the mix loss supervises its channel mean).
        queries (`torch.FloatTensor` of shape `(B, T, Q, C)`):
            The last decoder layer's queries, which make the prediction.
        mask_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Unweighted loss of `logits` (Dice or BCE for binary models, cross-entropy otherwise).
        mix_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Unweighted Dice loss of the mask feature's channel mean (the paper's mix loss).
        backbone_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The 4 backbone stage maps `(BT, C_i, h_i, w_i)`, when `output_hidden_states`.
        encoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Encoder tokens `(BT, S, C)`: the projected stages 2-4, then each layer's output (the
            last is the encoder memory), when `output_hidden_states`.
        decoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Queries `(BT, Q, C)`: the query generator's output, then each decoder layer's output.
        encoder_attentions (`tuple(torch.FloatTensor)`, *optional*):
            Per encoder layer, the deformable attention's sampling weights
            `(BT, S, heads, levels, points)`, when `output_attentions`.
        decoder_attentions (`tuple(torch.FloatTensor)`, *optional*):
            Per decoder layer, the query self-attention weights `(BT, heads, Q, Q)`.
        cross_attentions (`tuple(torch.FloatTensor)`, *optional*):
            Per decoder layer, the cross-attention weights of the queries over the encoder tokens
            `(BT, heads, Q, S)`.
        mixer_attentions (`torch.FloatTensor` of shape `(BT, heads, h, w)`, *optional*):
            Where the mixer's audio query looks in the mask feature (softmax over the pixels).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mask_feature: torch.FloatTensor | None = None
    queries: torch.FloatTensor | None = None
    mask_loss: torch.FloatTensor | None = None
    mix_loss: torch.FloatTensor | None = None
    backbone_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    encoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    decoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    mixer_attentions: torch.FloatTensor | None = None


class AVSegFormerConvNorm(nn.Module):
    """Convolution followed by GroupNorm (and optionally ReLU)."""

    def __init__(
        self, config: AVSegFormerConfig, in_channels: int, kernel_size: int = 1, activation: bool = False
    ):
        super().__init__()
        channels = config.hidden_size
        self.convolution = nn.Conv2d(in_channels, channels, kernel_size, padding=kernel_size // 2)
        self.normalization = nn.GroupNorm(config.group_norm_groups, channels)
        self.activation = nn.ReLU() if activation else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.normalization(self.convolution(hidden_states)))


class AVSegFormerAttention(nn.Module):
    """Multi-head attention with separate query, key, value and output projections.

    The maths of `torch.nn.MultiheadAttention` (the official layers), written out so the attention
    weights are the tensors the forward uses: `softmax(q k^T / sqrt(d)) v`.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        output_bias: bool = True,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = dropout
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=output_bias)

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        return states.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def attention_weights(self, hidden_states: torch.Tensor, key_value_states: torch.Tensor) -> torch.Tensor:
        """`(N, q, C)` queries over `(N, k, C)` keys -> `(N, heads, q, k)` softmax weights."""
        query = self._heads(self.q_proj(hidden_states))
        key = self._heads(self.k_proj(key_value_states))
        return torch.matmul(query * self.scale, key.transpose(-1, -2)).softmax(dim=-1)

    def attend(self, weights: torch.Tensor, key_value_states: torch.Tensor) -> torch.Tensor:
        """`(N, heads, q, k)` weights over `(N, k, C)` values -> `(N, q, C)` output."""
        value = self._heads(self.v_proj(key_value_states))
        attended = torch.matmul(F.dropout(weights, p=self.dropout, training=self.training), value)
        return self.o_proj(attended.transpose(1, 2).flatten(2))

    def forward(
        self, hidden_states: torch.Tensor, key_value_states: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(N, q, C)` queries over `(N, k, C)` keys/values (default: the queries) ->
        `(N, q, C)` output and `(N, heads, q, k)` attention weights."""
        key_value_states = hidden_states if key_value_states is None else key_value_states
        weights = self.attention_weights(hidden_states, key_value_states)
        return self.attend(weights, key_value_states), weights


class AVSegFormerFeedForward(nn.Module):
    """Linear, GELU, (dropout), linear."""

    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = dropout

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.dropout(F.gelu(self.fc1(hidden_states)), p=self.dropout, training=self.training)
        return self.fc2(hidden_states)


class AVSegFormerPositionEmbedding(nn.Module):
    """Sine position encoding of every encoder token plus a learned embedding of its level.

    The sine encoding is DETR's on the raw 1-based row and column indices (`normalize=False`,
    as the official code; Deformable DETR normalises them to [0, 2 pi]), computed in float32.
    """

    def __init__(self, config: AVSegFormerConfig):
        super().__init__()
        self.sine = Mask2FormerSinePositionEmbedding(
            num_position_features=config.hidden_size // 2, normalize=False
        )
        self.level_embed = nn.Parameter(torch.empty(NUM_FEATURE_LEVELS, config.hidden_size))

    def forward(self, spatial_shapes: list[tuple[int, int]], device, dtype) -> torch.Tensor:
        """-> `(1, S, C)` position embeddings (the same for every frame)."""
        embeddings = []
        for level, (height, width) in enumerate(spatial_shapes):
            sine = self.sine((1, 1, height, width), device, torch.float32).flatten(2).transpose(1, 2)
            embeddings.append(sine.to(dtype) + self.level_embed[level])
        return torch.cat(embeddings, dim=1)


class AVSegFormerEncoderLayer(GradientCheckpointingLayer):
    """Post-norm encoder layer: multi-scale deformable self-attention (query = token + position,
    value = token) and a GELU FFN.

    The deformable attention is Transformers' own (the Mask2Former pixel decoder's module, whose
    pure-PyTorch path samples with `grid_sample`, bilinear, zero padding, `align_corners=False`,
    exactly as the official `ms_deform_attn_core_pytorch` and CUDA kernel)."""

    def __init__(self, config: AVSegFormerConfig):
        super().__init__()
        hidden = config.hidden_size
        self.self_attn = Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention(
            embed_dim=hidden,
            num_heads=config.encoder_attention_heads,
            n_levels=NUM_FEATURE_LEVELS,
            n_points=config.encoder_n_points,
        )
        self.self_attn_layer_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.mlp = AVSegFormerFeedForward(hidden, config.encoder_ffn_dim, config.dropout)
        self.final_layer_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = config.dropout

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attended, attention_weights = self.self_attn(
            hidden_states=hidden_states,
            encoder_hidden_states=hidden_states,
            position_embeddings=position_embeddings,
            reference_points=reference_points,
            spatial_shapes_list=spatial_shapes,
        )
        hidden_states = self.self_attn_layer_norm(
            hidden_states + F.dropout(attended, p=self.dropout, training=self.training)
        )
        feed_forward = F.dropout(self.mlp(hidden_states), p=self.dropout, training=self.training)
        return self.final_layer_norm(hidden_states + feed_forward), attention_weights


class AVSegFormerEncoder(nn.Module):
    """The transformer encoder: `encoder_layers` deformable-attention layers over stages 2-4."""

    def __init__(self, config: AVSegFormerConfig):
        super().__init__()
        self.layers = nn.ModuleList(AVSegFormerEncoderLayer(config) for _ in range(config.encoder_layers))

    @staticmethod
    def reference_points(spatial_shapes: list[tuple[int, int]], device, dtype) -> torch.Tensor:
        """Pixel centres of every level, normalised to [0, 1]: `(1, S, levels, 2)` as (x, y)."""
        points = []
        for height, width in spatial_shapes:
            row = torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=device) / height
            column = torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=device) / width
            grid_y, grid_x = torch.meshgrid(row, column, indexing="ij")
            points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=-1))
        points = torch.cat(points, dim=0)
        return points[None, :, None].expand(1, -1, len(spatial_shapes), 2).to(dtype)

    def forward(
        self,
        tokens: torch.Tensor,
        position_embeddings: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple | None, tuple | None]:
        """`(BT, S, C)` tokens -> memory `(BT, S, C)`, hidden states, sampling weights."""
        reference_points = self.reference_points(spatial_shapes, tokens.device, tokens.dtype)
        hidden_states = (tokens,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for layer in self.layers:
            tokens, weights = layer(tokens, position_embeddings, reference_points, spatial_shapes)
            if output_hidden_states:
                hidden_states += (tokens,)
            if output_attentions:
                attentions += (weights,)
        return tokens, hidden_states, attentions


class AVSegFormerQueryGeneratorLayer(GradientCheckpointingLayer):
    """Post-norm layer of the query generator: self-attention, cross-attention to the frame's
    single audio token, GELU FFN (all projections of the attention without bias, no dropout)."""

    def __init__(self, config: AVSegFormerConfig):
        super().__init__()
        hidden, heads = config.hidden_size, config.query_generator_attention_heads
        self.self_attn = AVSegFormerAttention(hidden, heads, bias=False, output_bias=False)
        self.self_attn_layer_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.cross_attn = AVSegFormerAttention(hidden, heads, bias=False, output_bias=False)
        self.cross_attn_layer_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.mlp = AVSegFormerFeedForward(hidden, config.query_generator_ffn_dim)
        self.final_layer_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)

    def forward(self, queries: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        queries = self.self_attn_layer_norm(queries + self.self_attn(queries)[0])
        # One audio token: its attention weight is 1, so this adds the projected audio vector.
        queries = self.cross_attn_layer_norm(queries + self.cross_attn(queries, audio)[0])
        return self.final_layer_norm(queries + self.mlp(queries))


class AVSegFormerQueryGenerator(nn.Module):
    """The query generator: `Q` initial queries attend to the frame's audio token through
    `query_generator_layers` layers; the learnable queries are then added."""

    def __init__(self, config: AVSegFormerConfig):
        super().__init__()
        self.initial_queries = nn.Parameter(torch.empty(config.num_queries, config.hidden_size))
        self.learnable_queries = nn.Parameter(torch.empty(config.num_queries, config.hidden_size))
        self.layers = nn.ModuleList(
            AVSegFormerQueryGeneratorLayer(config) for _ in range(config.query_generator_layers)
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """`(BT, 1, C)` audio tokens -> `(BT, Q, C)` decoder queries."""
        # A copy, not an expanded view: a view of a parameter made under no_grad has no grad_fn
        # yet requires grad, which trips torch's module tracker (FlopCounterMode).
        queries = self.initial_queries.repeat(audio.shape[0], 1, 1)
        for layer in self.layers:
            queries = layer(queries, audio)
        return queries + self.learnable_queries


class AVSegFormerDecoderLayer(GradientCheckpointingLayer):
    """Post-norm decoder layer: query self-attention, dense cross-attention to every encoder token
    (no positional embeddings; the official deformable cross-attention is commented out), GELU FFN."""

    def __init__(self, config: AVSegFormerConfig):
        super().__init__()
        hidden, heads = config.hidden_size, config.decoder_attention_heads
        self.self_attn = AVSegFormerAttention(hidden, heads, dropout=config.dropout)
        self.self_attn_layer_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.cross_attn = AVSegFormerAttention(hidden, heads, dropout=config.dropout)
        self.cross_attn_layer_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.mlp = AVSegFormerFeedForward(hidden, config.decoder_ffn_dim, config.dropout)
        self.final_layer_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = config.dropout

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attended, self_weights = self.self_attn(queries)
        queries = self.self_attn_layer_norm(
            queries + F.dropout(attended, p=self.dropout, training=self.training)
        )
        attended, cross_weights = self.cross_attn(queries, memory)
        queries = self.cross_attn_layer_norm(
            queries + F.dropout(attended, p=self.dropout, training=self.training)
        )
        feed_forward = F.dropout(self.mlp(queries), p=self.dropout, training=self.training)
        return self.final_layer_norm(queries + feed_forward), self_weights, cross_weights


class AVSegFormerDecoder(nn.Module):
    """The transformer decoder: `decoder_layers` layers; the last layer's queries are the output."""

    def __init__(self, config: AVSegFormerConfig):
        super().__init__()
        self.layers = nn.ModuleList(AVSegFormerDecoderLayer(config) for _ in range(config.decoder_layers))

    def forward(
        self,
        queries: torch.Tensor,
        memory: torch.Tensor,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple | None, tuple | None, tuple | None]:
        hidden_states = (queries,) if output_hidden_states else None
        self_attentions = () if output_attentions else None
        cross_attentions = () if output_attentions else None
        for layer in self.layers:
            queries, self_weights, cross_weights = layer(queries, memory)
            if output_hidden_states:
                hidden_states += (queries,)
            if output_attentions:
                self_attentions += (self_weights,)
                cross_attentions += (cross_weights,)
        return queries, hidden_states, self_attentions, cross_attentions


class AVSegFormerCrossModalMixer(nn.Module):
    """The audio-visual mixer: the frame's audio token attends over the mask feature's pixels; the
    sigmoid of the result gates the mask feature's channels (amplifying the sounding object's)."""

    def __init__(self, config: AVSegFormerConfig):
        super().__init__()
        self.attention = AVSegFormerAttention(config.hidden_size, config.mixer_attention_heads, bias=False)

    def forward(self, mask_feature: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(BT, C, h, w)` mask feature and `(BT, 1, C)` audio -> gated `(BT, C, h, w)` and the
        attention map `(BT, heads, h, w)`."""
        pixels = mask_feature.flatten(2).transpose(1, 2)
        weights = self.attention.attention_weights(audio, pixels)
        # The map is the tensor the forward continues from, so gradients reach it.
        attention_map = weights[:, :, 0].unflatten(-1, mask_feature.shape[-2:])
        attended = self.attention.attend(attention_map.flatten(2).unsqueeze(2), pixels)
        # Indexing (not the official `squeeze()`) keeps the frame axis for a batch of one frame.
        gate = attended[:, 0].sigmoid()
        return mask_feature * gate[:, :, None, None], attention_map


class AVSegFormerMaskHead(nn.Module):
    """Mask prediction: each pixel's dot products with the `Q` queries go through an MLP of 1x1
    convolutions (`Q -> hidden -> hidden -> C`), are added to the mask feature, and a 3x3
    convolution, an upsampling to the input size, a 3x3 convolution with ReLU and a bias-free 1x1
    classifier give the logits."""

    def __init__(self, config: AVSegFormerConfig):
        super().__init__()
        widths = [
            config.num_queries,
            config.mask_mlp_hidden_size,
            config.mask_mlp_hidden_size,
            config.hidden_size,
        ]
        self.mlp = nn.ModuleList(
            nn.Conv2d(w_in, w_out, kernel_size=1) for w_in, w_out in itertools.pairwise(widths)
        )
        first, second = config.head_hidden_sizes
        self.projection = nn.Conv2d(config.hidden_size, first, kernel_size=3, padding=1)
        self.refinement = nn.Conv2d(first, second, kernel_size=3, padding=1)
        self.classifier = nn.Conv2d(second, config.num_labels, kernel_size=1, bias=False)

    def forward(
        self, mask_feature: torch.Tensor, queries: torch.Tensor, output_size: tuple[int, int]
    ) -> torch.Tensor:
        """`(BT, C, h, w)` and `(BT, Q, C)` -> `(BT, L, H, W)` logits."""
        hidden_states = torch.einsum("bqc,bchw->bqhw", queries, mask_feature)
        for index, conv in enumerate(self.mlp):
            hidden_states = conv(hidden_states)
            if index < len(self.mlp) - 1:
                hidden_states = F.relu(hidden_states)
        hidden_states = self.projection(mask_feature + hidden_states)
        # The official code upsamples x4; at input sizes divisible by 4 that is the input size.
        hidden_states = F.interpolate(hidden_states, size=output_size, mode="bilinear", align_corners=False)
        return self.classifier(F.relu(self.refinement(hidden_states)))


class AVSegFormerPreTrainedModel(HubModelMixin, PreTrainedModel):
    config_class = AVSegFormerConfig
    base_model_prefix = "avsegformer"
    main_input_name = "pixel_values"
    input_modalities = ("image", "audio")
    supports_gradient_checkpointing = True
    _no_split_modules = [  # noqa: RUF012 (Transformers reads this class attribute)
        "AVSegFormerEncoderLayer",
        "AVSegFormerQueryGeneratorLayer",
        "AVSegFormerDecoderLayer",
        "AVSegFormerCrossModalMixer",
    ]

    def _init_weights(self, module: nn.Module) -> None:
        """The official initialisation: Xavier-uniform weights in the head and transformer, zero
        biases, the deformable attention's rotating offset grid, normal level embeddings. The
        backbone and audio encoder are sub-models with their own `_init_weights`."""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention):
            # Applied after the Linear rule above (children are initialised first).
            init.zeros_(module.sampling_offsets.weight)
            angles = torch.arange(module.n_heads, dtype=torch.float32) * (2.0 * torch.pi / module.n_heads)
            directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
            directions = directions / directions.abs().max(dim=-1, keepdim=True).values
            steps = torch.arange(1, module.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
            grid = directions.view(module.n_heads, 1, 1, 2) * steps
            init.copy_(module.sampling_offsets.bias, grid.expand(-1, module.n_levels, -1, -1).reshape(-1))
            init.zeros_(module.attention_weights.weight)
            init.zeros_(module.attention_weights.bias)
        elif isinstance(module, AVSegFormerPositionEmbedding):
            init.normal_(module.level_embed)
        elif isinstance(module, AVSegFormerQueryGenerator):
            init.xavier_uniform_(module.initial_queries)
            init.normal_(module.learnable_queries)


class AVSegFormerForAudioVisualSegmentation(AudioEncoderMixin, AVSegFormerPreTrainedModel):
    """AVSegFormer: clips and their audio in, sounding-object masks out (binary or semantic)."""

    def __init__(self, config: AVSegFormerConfig):
        super().__init__(config)
        self.backbone = load_backbone(config)
        self.audio_encoder = sub_model_from_config(config.audio_config) if config.audio_config else None
        self.audio_projection = nn.Linear(config.audio_embed_dim, config.hidden_size)
        self.input_projections = nn.ModuleList(
            AVSegFormerConvNorm(config, channels) for channels in self.backbone.channels
        )
        self.position_embedding = AVSegFormerPositionEmbedding(config)
        self.encoder = AVSegFormerEncoder(config)
        self.query_generator = AVSegFormerQueryGenerator(config)
        self.decoder = AVSegFormerDecoder(config)
        self.lateral_conv = AVSegFormerConvNorm(config, config.hidden_size)
        self.output_conv = AVSegFormerConvNorm(config, config.hidden_size, kernel_size=3, activation=True)
        self.mixer = AVSegFormerCrossModalMixer(config)
        self.mask_head = AVSegFormerMaskHead(config)
        self.post_init()
        self.train(self.training)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_features: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        labeled_frames: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> AVSegFormerSegmentationOutput | tuple:
        r"""Segment the sounding objects of `B` clips of `T` frames.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(B, T, 3, H, W)`):
                Normalised frames (see `AudioVisualProcessor`).
            input_features (`torch.FloatTensor` of shape `(B, T, 1, 96, 64)`, *optional*):
                One VGGish log-mel example per frame, embedded by the model's audio encoder.
            audio_embeds (`torch.FloatTensor` of shape `(B, T, audio_embed_dim)`, *optional*):
                Precomputed audio embeddings (pass these or `input_features`).
            frame_mask (`torch.Tensor` of shape `(B, T)`, *optional*):
                1 for real frames, 0 for padding (AVSS clips shorter than T). As in the official
                AVSS model, it multiplies the backbone features, the mask feature and the logits;
                padding frames never count in the loss.
            labels (`torch.Tensor` of shape `(B, T, H, W)`, *optional*):
                Ground truth: {0, 1} masks when `num_labels == 1`, class ids in `[0, num_labels)` or
                255 (ignored) otherwise.
            labeled_frames (`torch.Tensor` of shape `(B, T)`, *optional*):
                Which frames have ground truth (S4 training: the first only). Defaults to all
                frames (times `frame_mask`).
            output_hidden_states (`bool`, *optional*):
                Return the backbone stages, the encoder tokens and the decoder queries.
            output_attentions (`bool`, *optional*):
                Return the encoder's sampling weights, the decoder's self- and cross-attention
                weights and the mixer's attention map.
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        pixel_values = check_pixel_values(pixel_values, self.dtype)
        batch, num_frames, _, height, width = pixel_values.shape
        audio_embeds = self._embed_audio(input_features, audio_embeds, batch, num_frames)
        audio = self.audio_projection(audio_embeds.flatten(0, 1))
        audio = audio.unsqueeze(1)

        feature_maps = self.backbone(pixel_values.flatten(0, 1)).feature_maps
        valid = None
        if frame_mask is not None:
            check_shape("frame_mask", frame_mask, (batch, num_frames))
            valid = frame_mask.reshape(-1, 1, 1, 1).to(self.dtype)
        stages = [features * valid for features in feature_maps] if valid is not None else list(feature_maps)
        projected = [project(features) for project, features in zip(self.input_projections, stages)]

        # Transformer encoder over stages 2-4, flattened into one token sequence.
        sources = projected[1:]
        spatial_shapes = [tuple(source.shape[-2:]) for source in sources]
        tokens = torch.cat([source.flatten(2).transpose(1, 2) for source in sources], dim=1)
        position_embeddings = self.position_embedding(spatial_shapes, tokens.device, tokens.dtype)
        memory, encoder_hidden_states, encoder_attentions = self.encoder(
            tokens, position_embeddings, spatial_shapes, output_hidden_states, output_attentions
        )

        queries = self.query_generator(audio)
        queries, decoder_hidden_states, decoder_attentions, cross_attentions = self.decoder(
            queries, memory, output_hidden_states, output_attentions
        )

        # Mask feature: stage 1 plus the upsampled first encoder level, then the mixer.
        first_height, first_width = spatial_shapes[0]
        first_level = memory[:, : first_height * first_width].transpose(1, 2)
        first_level = first_level.unflatten(-1, (first_height, first_width))
        lateral = self.lateral_conv(projected[0])
        mask_feature = lateral + F.interpolate(
            first_level, size=lateral.shape[-2:], mode="bilinear", align_corners=False
        )
        mask_feature, mixer_attentions = self.mixer(self.output_conv(mask_feature), audio)

        logits = self.mask_head(mask_feature, queries, (height, width))
        if valid is not None:
            logits = logits * valid
            mask_feature = mask_feature * valid
        logits = logits.unflatten(0, (batch, num_frames))
        mask_feature = mask_feature.unflatten(0, (batch, num_frames))

        loss = mask_loss = mix_loss = None
        if labels is not None:
            mask_loss, mix_loss = self._losses(logits, mask_feature, labels, labeled_frames, frame_mask)
            loss = config.mask_loss_weight * mask_loss + config.mix_loss_weight * mix_loss

        output = AVSegFormerSegmentationOutput(
            loss=loss,
            logits=logits,
            mask_feature=mask_feature,
            queries=queries.unflatten(0, (batch, num_frames)),
            mask_loss=mask_loss,
            mix_loss=mix_loss,
            backbone_hidden_states=tuple(feature_maps) if output_hidden_states else None,
            encoder_hidden_states=encoder_hidden_states,
            decoder_hidden_states=decoder_hidden_states,
            encoder_attentions=encoder_attentions,
            decoder_attentions=decoder_attentions,
            cross_attentions=cross_attentions,
            mixer_attentions=mixer_attentions if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()

    def _losses(
        self, logits, mask_feature, labels, labeled_frames, frame_mask
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The official training losses, averaged over the labelled frames.

        - prediction: per-frame Dice (or BCE) of the sigmoid for binary models; per-frame mean
          cross-entropy for semantic ones (pixels labelled `IGNORE_INDEX` add nothing);
        - mix loss: Dice of the sigmoid of the mask feature's channel mean, upsampled (bilinear)
          to the label size, against the foreground (any class but 0 for semantic models;
          ignored pixels left out).

        Dice is `1 - 2 sum(p t) / (sum(p^2) + 1e-3 + sum(t^2) + 1e-3)` per frame.
        """
        batch, num_frames, _, height, width = logits.shape
        check_shape("labels", labels, (batch, num_frames, height, width))
        weights = torch.ones(batch, num_frames, device=logits.device, dtype=torch.float32)
        if labeled_frames is not None:
            check_shape("labeled_frames", labeled_frames, (batch, num_frames))
            weights = weights * labeled_frames.to(weights.dtype)
        if frame_mask is not None:
            weights = weights * frame_mask.to(weights.dtype)
        selected = weights.reshape(-1).nonzero().squeeze(1)
        if selected.numel() == 0:
            raise ValueError("No labelled frame in the batch: `labeled_frames` * `frame_mask` is all zero.")

        logits = logits.flatten(0, 1).index_select(0, selected).float()
        labels = labels.flatten(0, 1).index_select(0, selected.to(labels.device))
        semantic = is_semantic_segmentation(self.config)
        if not semantic:
            target = check_binary_mask("labels", labels).float()
            counted = torch.ones_like(target)
            if self.config.mask_loss == "dice":
                mask_loss = _dice_loss(logits[:, 0], target, counted)
            else:
                mask_loss = F.binary_cross_entropy_with_logits(logits[:, 0], target)
        else:
            class_ids = check_class_map("labels", labels, self.config.num_labels)
            mask_loss = (
                F.cross_entropy(logits, class_ids, ignore_index=IGNORE_INDEX, reduction="none")
                .mean(dim=(1, 2))
                .mean()
            )
            counted = (class_ids != IGNORE_INDEX).float()
            target = ((class_ids > 0) & (class_ids != IGNORE_INDEX)).float()

        channel_mean = mask_feature.flatten(0, 1).index_select(0, selected).float().mean(dim=1, keepdim=True)
        channel_mean = F.interpolate(channel_mean, size=(height, width), mode="bilinear", align_corners=False)
        if not semantic and self.config.mask_loss == "bce":
            mix_loss = F.binary_cross_entropy_with_logits(channel_mean[:, 0], target)
        else:
            mix_loss = _dice_loss(channel_mean[:, 0], target, counted)
        return mask_loss, mix_loss


def _dice_loss(logits: torch.Tensor, target: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """Mean over frames of the official Dice loss of `sigmoid(logits)`, `(N, H, W)` each;
    pixels where `counted` is 0 are left out."""
    probability = logits.sigmoid() * counted
    target = target * counted
    overlap = (probability * target).sum(dim=(1, 2))
    denominator = (probability * probability).sum(dim=(1, 2)) + (target * target).sum(dim=(1, 2))
    return (1 - 2 * overlap / (denominator + 2 * DICE_SMOOTHING)).mean()


__all__ = [
    "AVSegFormerForAudioVisualSegmentation",
    "AVSegFormerPreTrainedModel",
    "AVSegFormerSegmentationOutput",
]
