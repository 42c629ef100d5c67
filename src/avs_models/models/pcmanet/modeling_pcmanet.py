"""PCMANet: Progressive Confident Masking Attention Network for audio-visual segmentation.

Shapes use `B` clips of `T` frames (one frame per second of audio), `BT = B * T` frames folded
into the batch, `C = config.hidden_size`, `L = config.num_labels`, `g = config.avga_groups`,
`h x w` for a stage's feature map and `N = n x n` for the token grid of a stage's QSCA.

Precision: the model runs in fp32, fp16 or bf16 (`model.to(dtype)`, `from_pretrained(..., dtype=...)`
or autocast). Three places compute in fp32 whatever the dtype, because low precision changes
their result rather than only rounding it: AVGA's cosine similarity (its norm floor of 1e-12 is
0 in fp16, so an all-zero group would divide 0/0), the CIM probabilities compared with the 0.99
threshold (bf16 cannot tell 0.99 from 0.992), and the losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import load_backbone
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ..audio_utils import AudioEncoderMixin, with_leading_dims
from ..auto import sub_model_from_config
from ..hub_code import HubModelMixin
from ..inputs import check_pixel_values, check_shape
from ..labels import check_binary_mask, check_class_map, is_semantic_segmentation
from .configuration_pcmanet import PCMANetConfig


@dataclass
class PCMANetSegmentationOutput(ModelOutput):
    """Output of [`PCMANetForAudioVisualSegmentation`].

    Stage `i` (1 to 4) is the backbone stage of stride `2 ** (i + 1)`; stage 1 is the finest.
    With `return_dict=False` the fields that are not `None` come as a tuple in this order.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Weighted sum of the four stage losses, when `labels` are given.
        logits (`torch.FloatTensor` of shape `(B, T, L, H, W)`):
            Final (stage 1) prediction at the input size: sigmoid logits when `L == 1`, class
            logits otherwise.
        auxiliary_logits (`tuple(torch.FloatTensor)`):
            Stage 2, 3 and 4 predictions, each `(B, T, L, H, W)` at the input size.
        confidence_masks (`tuple(torch.FloatTensor)`):
            CIM masks from stages 4, 3 and 2, each `(B, T, 1, h, w)` at that stage's resolution:
            1 marks an unconfident pixel whose token the next QSCA keeps as a query (paper Fig. 5).
        kept_token_ratios (`torch.FloatTensor` of shape `(3,)`):
            Fraction of ones in each confidence mask (stages 4, 3, 2) over the whole batch: the
            share of tokens the QSCA of stages 3, 2 and 1 queries with (paper Fig. 8). The QSCA of
            stage 4 keeps all tokens; with `qsca_query_selection=False` every QSCA does.
        stage_losses (`torch.FloatTensor` of shape `(4,)`, *optional*):
            Unweighted loss of stages 1 to 4, when `labels` are given.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            With `output_hidden_states`: the backbone's feature maps of stages 1 to 4, each
            `(B, T, C_i, h_i, w_i)` with the backbone's stage widths `C_i`.
        decoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            With `output_hidden_states`: the guided-fusion (decoder) maps of stages 1 to 4, each
            `(B, T, C, h_i, w_i)`, the input of that stage's prediction head.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            With `output_attentions`: AVGA's cosine-similarity maps of stages 1 to 4, each
            `(B, T, g, h_i, w_i)`, one map per channel group (paper Fig. 9). `None` without AVGA
            (`use_avga=False`).
        audio_cross_attentions (`tuple(torch.FloatTensor)`, *optional*):
            With `output_attentions`: QSCA's attention weights of each frame's audio query over
            the visual tokens of its clip, stages 1 to 4, each `(B, T, heads, T, N_i)` (tokens of
            the pooled `n_i x n_i` grid in row-major order). `None` without QSCA.
        visual_cross_attentions (`tuple(torch.FloatTensor)`, *optional*):
            With `output_attentions`: QSCA's attention weights of each visual token query over the
            audio frames of its clip, stages 1 to 4, each `(B, T, heads, N_i, T)`. Rows of tokens
            that were not kept as queries are zero. `None` without QSCA.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    auxiliary_logits: tuple[torch.FloatTensor, ...] | None = None
    confidence_masks: tuple[torch.FloatTensor, ...] | None = None
    kept_token_ratios: torch.FloatTensor | None = None
    stage_losses: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    audio_cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    visual_cross_attentions: tuple[torch.FloatTensor, ...] | None = None


class PCMANetConvLayer(nn.Module):
    """Convolution, batch norm and ReLU (the paper's CBR)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, groups: int = 1):
        super().__init__()
        self.convolution = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups
        )
        self.normalization = nn.BatchNorm2d(out_channels)
        self.activation = nn.ReLU()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.normalization(self.convolution(hidden_states)))


class PCMANetAudioVisualGroupedAttention(GradientCheckpointingLayer):
    """AVGA: cosine similarity between the audio vector and each channel group of every pixel.

    The visual map is split into `groups` channel groups; each group is modulated by its own
    cosine-similarity map with the audio embedding (projected to the group width).
    """

    def __init__(self, config: PCMANetConfig):
        super().__init__()
        channels, self.groups = config.hidden_size, config.avga_groups
        self.grouped_conv = PCMANetConvLayer(channels, channels, kernel_size=1, groups=self.groups)
        self.audio_mlp = nn.Sequential(
            nn.Linear(channels, channels), nn.Linear(channels, channels // self.groups), nn.ReLU()
        )
        self.output_conv = PCMANetConvLayer(channels, channels, kernel_size=1)

    def forward(
        self, visual: torch.Tensor, audio: torch.Tensor, num_frames: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """visual `(BT, C, h, w)`, audio `(BT, C)` -> output `(BT, C, h, w)` and the similarity
        maps `(B, T, g, h, w)`."""
        frames, channels, height, width = visual.shape
        visual = self.grouped_conv(visual)
        grouped = visual.view(frames, self.groups, channels // self.groups, height, width)
        audio = self.audio_mlp(audio)
        with torch.autocast(visual.device.type, enabled=False):  # fp32 in any dtype (module docstring)
            grouped_fp32 = grouped.float()
            audio_direction = F.normalize(audio.float(), dim=1)
            # Cosine similarity as dot product / norm, without writing a normalised copy of the map
            # (F.normalize's rule: divide by max(norm, 1e-12)).
            dot = torch.einsum("bgchw,bc->bghw", grouped_fp32, audio_direction)
            norm = torch.linalg.vector_norm(grouped_fp32, dim=2).clamp_min(1e-12)
            similarity = (dot / norm).to(visual.dtype)
        similarity_maps, similarity = with_leading_dims(similarity, (frames // num_frames, num_frames))
        modulated = grouped * similarity.unsqueeze(2)
        return self.output_conv(modulated.view(frames, channels, height, width)), similarity_maps


def _resize_bilinear(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (`align_corners=False`) of `(N, C, h, w)` maps; a no-op at the same size (where
    it is the identity). Runs in channels-last memory, where PyTorch's CPU kernel is several times
    faster than on NCHW tensors for these many-channel maps."""
    if tuple(features.shape[-2:]) == tuple(size):
        return features
    features = features.contiguous(memory_format=torch.channels_last)
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


class PCMANetFoldedKeyValue(nn.Module):
    """QSCA's visual key and value projections, applied on the audio side of the attention.

    Each frame's audio query attends over every token of its clip. Projecting every token to keys
    and values costs `2 x heads x head_dim x C` per token; folding the projections onto the few audio
    vectors instead (`q . (W_k x) = (W_k^T q) . x` and `sum p W_v x = W_v sum p x`) costs
    `heads x T` dot products per token. The weight is stored as one `(2 x heads x head_dim, C)`
    matrix (keys, then values), the layout of a bias-free `nn.Linear(C, 2 x heads x head_dim)`.
    """

    def __init__(self, config: PCMANetConfig):
        super().__init__()
        self.num_heads, self.head_dim = config.qsca_num_heads, config.qsca_head_dim
        self.weight = nn.Parameter(torch.empty(2 * self.num_heads * self.head_dim, config.hidden_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's own initialisation

    def forward(self, scaled_query: torch.Tensor, clip_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """scaled_query `(B, T, heads, head_dim)` (already times `head_dim ** -0.5`), clip_tokens
        `(B, T * N, C)` -> attended values `(B, T, heads, head_dim)` and weights `(B, T, heads, T * N)`."""
        key_weight, value_weight = self.weight.view(2, self.num_heads, self.head_dim, -1)
        query_in_token_space = torch.einsum("bthd,hdc->bthc", scaled_query, key_weight)
        weights = torch.einsum("bthc,bnc->bthn", query_in_token_space, clip_tokens).softmax(dim=-1)
        pooled_tokens = torch.einsum("bthn,bnc->bthc", weights, clip_tokens)
        return torch.einsum("bthc,hdc->bthd", pooled_tokens, value_weight), weights


class PCMANetQuerySelectedCrossAttention(GradientCheckpointingLayer):
    """QSCA: audio-guided cross-attention whose visual queries are the unconfident tokens only.

    The stage's feature map is pooled to a `pool_size x pool_size` token grid. Each frame's
    audio token attends to all visual tokens of its clip (all frames); the kept visual tokens
    attend to the clip's audio tokens. Kept tokens are gathered across the whole batch, attend,
    and are scattered back, so the visual branch costs follow the kept-token ratio. Tokens that
    are not kept receive the output projection of a zero attention output (its bias), exactly as
    the dense masked formulation.
    """

    def __init__(self, config: PCMANetConfig, pool_size: int):
        super().__init__()
        channels = config.hidden_size
        self.pool_size = pool_size
        self.num_heads = config.qsca_num_heads
        self.head_dim = config.qsca_head_dim
        self.scale = self.head_dim**-0.5
        self.spatial_layout = config.qsca_token_layout == "spatial"
        self.detach_selected = config.qsca_detach_selected_tokens
        inner = self.num_heads * self.head_dim

        self.audio_projection = nn.Linear(channels, channels)
        self.token_embedding = nn.Linear(channels, channels)
        self.layer_norm = nn.LayerNorm(channels)
        self.visual_query = nn.Linear(channels, inner, bias=False)
        self.visual_key_value = PCMANetFoldedKeyValue(config)
        self.audio_query_key_value = nn.Linear(channels, 3 * inner, bias=False)
        self.output_projection = nn.Linear(inner, channels)

    def forward(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor,
        num_frames: int,
        keep_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Attend between a stage's visual tokens and the clip's audio tokens.

        Args:
            visual: `(BT, C, h, w)` stage features.
            audio: `(BT, C)` audio state (from the previous, deeper QSCA).
            num_frames: `T`, the frames of one clip (attention never crosses clips).
            keep_mask: `(BT, 1, h', w')` confidence mask (1 = keep the token as a query), or `None`
                to keep all tokens.
            output_attentions: also return both attention weights.

        Returns:
            The guide map `(BT, C, h, w)`, the updated audio state `(BT, C)`, and with
            `output_attentions` the audio queries' weights `(B, T, heads, T, N)` and the visual
            queries' weights `(B, T, heads, N, T)` (else `None`, `None`).
        """
        frames, channels, height, width = visual.shape
        clips, grid = frames // num_frames, self.pool_size
        tokens = self.token_embedding(F.adaptive_avg_pool2d(visual, grid).flatten(2).transpose(1, 2))
        audio = self.audio_projection(audio)
        normed_tokens, normed_audio = self.layer_norm(tokens), self.layer_norm(audio)

        # Audio -> visual: each frame's audio token attends over every token of its clip.
        audio_query, audio_key, audio_value = (
            self.audio_query_key_value(normed_audio)
            .view(clips, num_frames, 3, self.num_heads, self.head_dim)
            .unbind(2)
        )
        clip_tokens = normed_tokens.reshape(clips, num_frames * grid * grid, channels)
        attended_audio, audio_weights = self.visual_key_value(audio_query * self.scale, clip_tokens)
        new_audio = audio + self.output_projection(attended_audio.reshape(frames, -1))

        # Visual -> audio on the kept tokens only, gathered over the whole batch. Compiled and
        # exported graphs need static shapes: there every token queries and the outputs of the
        # tokens not kept are zeroed, which gives the same result.
        query_tokens = normed_tokens.reshape(frames * grid * grid, channels)
        tokens_per_clip = num_frames * grid * grid
        if keep_mask is not None and keep_mask.shape[-2:] != (grid, grid):
            keep_mask = F.interpolate(keep_mask, size=(grid, grid), mode="nearest")
        if keep_mask is None or torch.compiler.is_compiling():
            selected = None
            queries = query_tokens
            clip_of_query = torch.arange(clips, device=visual.device).repeat_interleave(tokens_per_clip)
        else:
            selected = keep_mask.reshape(-1).nonzero().squeeze(1)
            queries = query_tokens.index_select(0, selected)
            clip_of_query = torch.div(selected, tokens_per_clip, rounding_mode="floor")
        query = self.visual_query(queries).unflatten(-1, (self.num_heads, self.head_dim))
        # Scores against every clip's audio keys, then each query's own clip: cheaper than copying
        # T keys and values per query (clips are few, queries many).
        scores = torch.einsum("qhd,cthd->qhct", query, audio_key)
        own_clip = clip_of_query.view(-1, 1, 1, 1).expand(-1, self.num_heads, 1, num_frames)
        weights = (scores.gather(2, own_clip).squeeze(2) * self.scale).softmax(dim=-1)
        if keep_mask is not None and selected is None:
            weights = weights * keep_mask.reshape(-1, 1, 1).to(weights.dtype)
        if clips == 1:
            attended = torch.einsum("qht,thd->qhd", weights, audio_value[0])
        else:
            attended = torch.einsum("qht,qthd->qhd", weights, audio_value.index_select(0, clip_of_query))
        if keep_mask is not None and self.detach_selected:
            # The official code scatters the kept tokens' attention outputs under no_grad.
            attended = attended.detach()

        flat_tokens = tokens.reshape(-1, channels)
        update = self.output_projection(attended.flatten(1)).to(flat_tokens.dtype)
        if selected is None:
            new_tokens = flat_tokens + update
        else:
            # A token that is not kept gets the projection of a zero attention output: the bias.
            untouched = flat_tokens + self.output_projection(attended.new_zeros(1, attended.shape[1:].numel()))
            new_tokens = untouched.index_copy(0, selected, flat_tokens.index_select(0, selected) + update)
        new_tokens = new_tokens.view(frames, grid * grid, channels)
        if self.spatial_layout:
            guide = new_tokens.transpose(1, 2).reshape(frames, channels, grid, grid)
        else:
            guide = new_tokens.reshape(frames, channels, grid, grid)
        guide = _resize_bilinear(guide, (height, width))

        if not output_attentions:
            return guide, new_audio, None, None
        audio_attentions = audio_weights.unflatten(-1, (num_frames, grid * grid))
        if selected is None:
            visual_attentions = weights
        else:
            visual_attentions = weights.new_zeros(frames * grid * grid, self.num_heads, num_frames)
            visual_attentions = visual_attentions.index_copy(0, selected, weights)
        visual_attentions = visual_attentions.view(clips, num_frames, grid * grid, self.num_heads, num_frames)
        return guide, new_audio, audio_attentions, visual_attentions.transpose(2, 3)


class PCMANetGuidedFusion(GradientCheckpointingLayer):
    """GF: adds the upsampled deeper decoder map and the QSCA guide map to a stage's features."""

    def __init__(self, config: PCMANetConfig, has_deeper_stage: bool):
        super().__init__()
        channels = config.hidden_size
        self.deeper_conv = PCMANetConvLayer(channels, channels) if has_deeper_stage else None
        self.guide_conv = PCMANetConvLayer(channels, channels) if config.use_qsca else None
        self.output_conv = PCMANetConvLayer(channels, channels)

    def forward(
        self, features: torch.Tensor, deeper: torch.Tensor | None, guide: torch.Tensor | None
    ) -> torch.Tensor:
        size = features.shape[-2:]
        fused = features
        if self.guide_conv is not None:
            fused = fused + self.guide_conv(_resize_bilinear(guide, size))
        if self.deeper_conv is not None:
            fused = fused + self.deeper_conv(_resize_bilinear(deeper, size))
        return self.output_conv(fused)


class PCMANetPredictionHead(GradientCheckpointingLayer):
    def __init__(self, config: PCMANetConfig):
        super().__init__()
        self.conv = PCMANetConvLayer(config.hidden_size, 128)
        self.classifier = nn.Conv2d(128, config.num_labels, kernel_size=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(hidden_states))


class PCMANetPreTrainedModel(HubModelMixin, PreTrainedModel):
    config_class = PCMANetConfig
    base_model_prefix = "pcmanet"
    main_input_name = "pixel_values"
    input_modalities = ("image", "audio")
    supports_gradient_checkpointing = True
    # Kept whole on one device by `device_map`; the backbone and audio encoder add their own.
    _no_split_modules = [  # noqa: RUF012 (Transformers reads this class attribute)
        "PCMANetConvLayer",
        "PCMANetAudioVisualGroupedAttention",
        "PCMANetQuerySelectedCrossAttention",
        "PCMANetGuidedFusion",
        "PCMANetPredictionHead",
    ]

    def _init_weights(self, module: nn.Module) -> None:
        # Backbone and audio encoder are sub-models: Transformers initialises them with their own
        # `_init_weights`, so only the PCMANet layers arrive here.
        if isinstance(module, (nn.Conv2d, nn.Linear, PCMANetFoldedKeyValue)):
            init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)


class PCMANetForAudioVisualSegmentation(AudioEncoderMixin, PCMANetPreTrainedModel):
    """PCMANet with its four-stage decoder: clips and their audio in, sounding-object masks out."""

    def __init__(self, config: PCMANetConfig):
        super().__init__(config)
        self.backbone = load_backbone(config)
        self.audio_encoder = sub_model_from_config(config.audio_config) if config.audio_config else None
        channels = config.hidden_size
        self.audio_projection = nn.Linear(config.audio_embed_dim, channels)
        self.stage_projections = nn.ModuleList(
            PCMANetConvLayer(in_channels, channels) for in_channels in self.backbone.channels
        )
        self.grouped_attention = (
            nn.ModuleList(PCMANetAudioVisualGroupedAttention(config) for _ in range(4)) if config.use_avga else None
        )
        self.cross_attention = (
            nn.ModuleList(PCMANetQuerySelectedCrossAttention(config, size) for size in config.qsca_pool_sizes)
            if config.use_qsca
            else None
        )
        self.fusion = nn.ModuleList(
            PCMANetGuidedFusion(config, has_deeper_stage=stage < 3) for stage in range(4)
        )
        self.heads = nn.ModuleList(PCMANetPredictionHead(config) for _ in range(4))
        self.post_init()
        self.train(self.training)

    def _unconfident(self, stage_logits: torch.Tensor) -> torch.Tensor:
        """CIM: 1 where the stage's probability lies inside the confidence band `[1 - c, c]`."""
        logits = stage_logits.float()
        if is_semantic_segmentation(self.config):
            probability = logits.softmax(dim=1).amax(dim=1, keepdim=True)
        else:
            probability = logits.sigmoid()
        threshold = self.config.confidence_threshold
        return ((probability <= threshold) & (probability >= 1 - threshold)).to(stage_logits.dtype)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_features: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        labeled_frames: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> PCMANetSegmentationOutput | tuple:
        r"""Segment the sounding objects of `B` clips of `T` frames.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(B, T, 3, H, W)`):
                Normalised frames (see `AudioVisualProcessor`), any float dtype (cast to the
                model's).
            input_features (`torch.FloatTensor` of shape `(B, T, 1, 96, 64)`, *optional*):
                One VGGish log-mel example per frame, embedded by the model's audio encoder.
            audio_embeds (`torch.FloatTensor` of shape `(B, T, audio_embed_dim)`, *optional*):
                Precomputed audio embeddings (pass these or `input_features`).
            frame_mask (`torch.Tensor` of shape `(B, T)`, *optional*):
                1 for real frames, 0 for padding (AVSS clips shorter than T). Padding frames'
                visual features are zeroed as in the official AVSS model, and they never count
                in the loss.
            labels (`torch.Tensor` of shape `(B, T, H, W)`, *optional*):
                Ground-truth masks: {0, 1} (or bool) when `num_labels == 1`; class ids in
                `[0, num_labels)` or `config.ignore_index` otherwise.
            labeled_frames (`torch.Tensor` of shape `(B, T)`, *optional*):
                Which frames have ground truth (S4 training: the first only). Defaults to all
                frames (times `frame_mask`). Only these frames' labels are read.
            output_attentions (`bool`, *optional*):
                Return AVGA's similarity maps and QSCA's attention weights (defaults to
                `config.output_attentions`).
            output_hidden_states (`bool`, *optional*):
                Return the backbone and decoder maps of every stage (defaults to
                `config.output_hidden_states`).
            return_dict (`bool`, *optional*):
                Return a [`PCMANetSegmentationOutput`] rather than a tuple.
        """
        config = self.config
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else config.return_dict
        pixel_values = check_pixel_values(pixel_values, self.dtype)
        batch, num_frames, _, height, width = pixel_values.shape
        clip_dims = (batch, num_frames)
        audio_embeds = self._embed_audio(input_features, audio_embeds, batch, num_frames)
        audio = self.audio_projection(audio_embeds.flatten(0, 1))

        backbone_maps = self.backbone(pixel_values.flatten(0, 1)).feature_maps
        hidden_states = []
        stage_features = []
        for project, features in zip(self.stage_projections, backbone_maps):
            if output_hidden_states:
                shaped, features = with_leading_dims(features, clip_dims)
                hidden_states.append(shaped)
            stage_features.append(project(features))
        if frame_mask is not None:
            check_shape("frame_mask", frame_mask, clip_dims)
            valid = frame_mask.reshape(-1, 1, 1, 1).to(stage_features[0].dtype)
            stage_features = [features * valid for features in stage_features]

        similarity_maps = []
        if self.grouped_attention is not None:
            fused = []
            for attention, features in zip(self.grouped_attention, stage_features):
                output, similarity = attention(features, audio, num_frames)
                fused.append(output)
                similarity_maps.append(similarity)
        else:  # the paper's baseline: the audio vector added to every pixel
            fused = [features + audio[:, :, None, None] for features in stage_features]

        stage_logits: list[torch.Tensor | None] = [None] * 4
        decoder_maps: list[torch.Tensor | None] = [None] * 4
        audio_attentions: list[torch.Tensor | None] = [None] * 4
        visual_attentions: list[torch.Tensor | None] = [None] * 4
        confidence_masks: list[torch.Tensor] = []
        initial_audio = audio
        keep_mask = deeper = guide = None
        for stage in reversed(range(4)):
            if self.cross_attention is not None:
                query_mask = keep_mask if config.qsca_query_selection else None
                stage_audio = audio if config.qsca_audio_continuity else initial_audio
                guide, audio, audio_attentions[stage], visual_attentions[stage] = self.cross_attention[stage](
                    fused[stage], stage_audio, num_frames, query_mask, output_attentions
                )
            deeper = self.fusion[stage](fused[stage], deeper, guide)
            if output_hidden_states:
                decoder_maps[stage], deeper = with_leading_dims(deeper, clip_dims)
            stage_logits[stage] = self.heads[stage](deeper)
            if stage > 0:
                unconfident = self._unconfident(stage_logits[stage])
                if keep_mask is not None and config.cim_progression:
                    keep_mask = F.interpolate(keep_mask, size=unconfident.shape[-2:], mode="nearest") * unconfident
                else:
                    keep_mask = unconfident
                confidence_masks.append(keep_mask)

        upsampled = [
            F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False).unflatten(0, clip_dims)
            for logits in stage_logits
        ]
        kept_token_ratios = torch.stack([mask.float().mean() for mask in confidence_masks])
        loss = stage_losses = None
        if labels is not None:
            stage_losses = self._stage_losses(upsampled, labels, labeled_frames, frame_mask)
            loss = (stage_losses * stage_losses.new_tensor(config.loss_stage_weights)).sum()

        has_cross_attention = output_attentions and self.cross_attention is not None
        output = PCMANetSegmentationOutput(
            loss=loss,
            logits=upsampled[0],
            auxiliary_logits=tuple(upsampled[1:]),
            confidence_masks=tuple(mask.unflatten(0, clip_dims) for mask in confidence_masks),
            kept_token_ratios=kept_token_ratios,
            stage_losses=stage_losses,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            decoder_hidden_states=tuple(decoder_maps) if output_hidden_states else None,
            attentions=tuple(similarity_maps) if output_attentions and similarity_maps else None,
            audio_cross_attentions=tuple(audio_attentions) if has_cross_attention else None,
            visual_cross_attentions=tuple(visual_attentions) if has_cross_attention else None,
        )
        return output if return_dict else output.to_tuple()

    def _stage_losses(self, stage_logits, labels, labeled_frames, frame_mask) -> torch.Tensor:
        """Loss of each stage on the labelled frames, as the official training code computes it, in fp32.

        Binary: BCE over all labelled pixels plus the mean soft-IoU loss of the labelled frames
        (`1 - (inter + 1) / (union - inter + 1)`). Multi-class: per-frame mean cross-entropy,
        averaged over the labelled frames; pixels labelled `config.ignore_index` add nothing, and
        each frame's sum is divided by all its pixels, as the official per-frame mean. Every frame
        is scored and the unlabelled ones weighted 0, so the graph has no data-dependent shapes.
        """
        batch, num_frames, _, height, width = stage_logits[0].shape
        check_shape("labels", labels, (batch, num_frames, height, width))
        labelled = torch.ones(batch, num_frames, dtype=torch.bool, device=labels.device)
        if labeled_frames is not None:
            check_shape("labeled_frames", labeled_frames, (batch, num_frames))
            labelled = labelled & (labeled_frames != 0)
        if frame_mask is not None:
            labelled = labelled & (frame_mask != 0)
        labelled = labelled.reshape(-1)
        labels = labels.flatten(0, 1)
        semantic = is_semantic_segmentation(self.config)
        if not torch.compiler.is_compiling():  # value checks would break the compiled graph
            if not bool(labelled.any()):
                raise ValueError("No labelled frame in the batch: `labeled_frames` * `frame_mask` is all zero.")
            if semantic:  # only the labelled frames' labels are read
                check_class_map("labels", labels[labelled], self.config.num_labels, self.config.ignore_index)
            else:
                check_binary_mask("labels", labels[labelled])
        labels = torch.where(labelled.view(-1, 1, 1), labels, torch.zeros_like(labels))
        frame_weights = labelled.float() / labelled.sum()

        losses = []
        for logits in stage_logits:
            logits = logits.flatten(0, 1).float()
            target = labels.to(logits.device)
            if semantic:
                frame_loss = F.cross_entropy(
                    logits, target.long(), ignore_index=self.config.ignore_index, reduction="none"
                ).mean(dim=(1, 2))
            else:
                target = target.to(logits.dtype).unsqueeze(1)
                bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(1, 2, 3))
                probability = logits.sigmoid()
                intersection = (probability * target).sum(dim=(2, 3))
                union = (probability + target).sum(dim=(2, 3))
                iou = 1 - (intersection + 1) / (union - intersection + 1)
                frame_loss = bce + iou.squeeze(1)
            losses.append((frame_loss * frame_weights.to(frame_loss.device)).sum())
        return torch.stack(losses)


__all__ = ["PCMANetForAudioVisualSegmentation", "PCMANetPreTrainedModel", "PCMANetSegmentationOutput"]
