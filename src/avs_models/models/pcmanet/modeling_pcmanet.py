"""PCMANet: Progressive Confident Masking Attention Network for audio-visual segmentation.

Shapes use `B` clips of `T` frames (one frame per second of audio), `BT = B * T` frames folded
into the batch, `C = config.hidden_size`, `L = config.num_labels`, and `h x w` for a stage's
feature map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import load_backbone
from transformers.utils import ModelOutput

from ..auto import sub_model_from_config
from ..hub_code import HubModelMixin
from .configuration_pcmanet import PCMANetConfig


@dataclass
class PCMANetSegmentationOutput(ModelOutput):
    """Output of [`PCMANetForAudioVisualSegmentation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Weighted sum of the four stage losses, when `labels` are given.
        logits (`torch.FloatTensor` of shape `(B, T, L, H, W)`):
            Final (stage 1) prediction at the input size: sigmoid logits when `L == 1`, class
            logits otherwise.
        auxiliary_logits (`tuple(torch.FloatTensor)`):
            Stage 2, 3 and 4 predictions, each `(B, T, L, H, W)` at the input size.
        confidence_masks (`tuple(torch.FloatTensor)`):
            Progressive CIM masks from stages 4, 3 and 2, each `(B, T, 1, h, w)` at that
            stage's resolution: 1 marks an unconfident pixel whose token the next QSCA keeps.
        kept_token_ratios (`torch.FloatTensor` of shape `(3,)`):
            Fraction of ones in each confidence mask (stages 4, 3, 2): the share of tokens the
            QSCA of stages 3, 2 and 1 attends with. The QSCA of stage 4 keeps all tokens.
        stage_losses (`torch.FloatTensor` of shape `(4,)`, *optional*):
            Unweighted loss of stages 1 to 4, when `labels` are given.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    auxiliary_logits: tuple[torch.FloatTensor, ...] | None = None
    confidence_masks: tuple[torch.FloatTensor, ...] | None = None
    kept_token_ratios: torch.FloatTensor | None = None
    stage_losses: torch.FloatTensor | None = None


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


class PCMANetAudioVisualGroupedAttention(nn.Module):
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

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """visual `(BT, C, h, w)`, audio `(BT, C)` -> `(BT, C, h, w)`."""
        frames, channels, height, width = visual.shape
        visual = self.grouped_conv(visual)
        grouped = visual.view(frames, self.groups, channels // self.groups, height, width)
        audio = F.normalize(self.audio_mlp(audio), dim=1)
        # Cosine similarity as dot product / norm, without writing a normalised copy of the map
        # (F.normalize's rule: divide by max(norm, 1e-12)).
        dot = torch.einsum("bgchw,bc->bghw", grouped, audio)
        norm = torch.linalg.vector_norm(grouped, dim=2).clamp_min(1e-12)
        similarity = (dot / norm).unsqueeze(2)
        return self.output_conv((grouped * similarity).view(frames, channels, height, width))


def _resize_bilinear(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (`align_corners=False`) of `(N, C, h, w)` maps; a no-op at the same size (where
    it is the identity). Runs in channels-last memory, where PyTorch's CPU kernel is several times
    faster than on NCHW tensors for these many-channel maps."""
    if tuple(features.shape[-2:]) == tuple(size):
        return features
    features = features.contiguous(memory_format=torch.channels_last)
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


class PCMANetQuerySelectedCrossAttention(nn.Module):
    """QSCA: audio-guided cross-attention whose visual queries are the unconfident tokens only.

    The stage's feature map is pooled to a `pool_size x pool_size` token grid. Each frame's
    audio token attends to all visual tokens of its clip (all frames); the kept visual tokens
    attend to the clip's audio tokens. Kept tokens are gathered across the whole batch, attend,
    and are scattered back, so the visual branch costs follow the kept-token ratio. Tokens that
    are not kept receive no attention update (the output projection's bias only), exactly as
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
        self.visual_key_value = nn.Linear(channels, 2 * inner, bias=False)
        self.audio_query_key_value = nn.Linear(channels, 3 * inner, bias=False)
        self.output_projection = nn.Linear(inner, channels)

    def _split_heads(self, states: torch.Tensor, parts: int = 1) -> torch.Tensor:
        """`(..., parts * heads * head_dim)` -> `(..., parts, heads, head_dim)` (parts=1: no parts axis)."""
        states = states.unflatten(-1, (parts, self.num_heads, self.head_dim))
        return states.squeeze(-3) if parts == 1 else states

    def forward(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor,
        num_frames: int,
        keep_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend between a stage's visual tokens and the clip's audio tokens.

        Args:
            visual: `(BT, C, h, w)` stage features.
            audio: `(BT, C)` audio state from the previous (deeper) QSCA.
            num_frames: `T`, the frames of one clip (attention never crosses clips).
            keep_mask: `(BT, 1, h', w')` confidence mask (1 = keep the token), or `None` to keep
                all tokens.

        Returns:
            The guide map `(BT, C, h, w)` and the updated audio state `(BT, C)`.
        """
        frames, channels, height, width = visual.shape
        clips, grid = frames // num_frames, self.pool_size
        tokens = self.token_embedding(F.adaptive_avg_pool2d(visual, grid).flatten(2).transpose(1, 2))
        audio = self.audio_projection(audio)
        normed_tokens, normed_audio = self.layer_norm(tokens), self.layer_norm(audio)

        # Audio -> visual: each frame's audio token attends over every token of its clip. The key
        # and value projections are applied to the few audio-side vectors instead of to every
        # token (q.(W_k x) = (W_k^T q).x and sum p W_v x = W_v sum p x), so this branch costs
        # heads x T dot products per token rather than a full projection of every token.
        audio_query, audio_key, audio_value = (
            self._split_heads(self.audio_query_key_value(normed_audio), parts=3)
            .view(clips, num_frames, 3, self.num_heads, self.head_dim)
            .unbind(2)
        )
        key_weight, value_weight = self.visual_key_value.weight.view(
            2, self.num_heads, self.head_dim, channels
        )
        clip_tokens = normed_tokens.reshape(clips, num_frames * grid * grid, channels)
        query_in_token_space = torch.einsum("bthd,hdc->bthc", audio_query * self.scale, key_weight)
        token_weights = torch.einsum("bthc,bnc->bthn", query_in_token_space, clip_tokens).softmax(dim=-1)
        pooled_tokens = torch.einsum("bthn,bnc->bthc", token_weights, clip_tokens)
        attended_audio = torch.einsum("bthc,hdc->bthd", pooled_tokens, value_weight)
        audio_update = attended_audio.reshape(frames, -1)
        new_audio = audio + self.output_projection(audio_update)

        # Visual -> audio on the kept tokens only, gathered over the whole batch.
        flat_tokens = normed_tokens.reshape(frames * grid * grid, channels)
        if keep_mask is None:
            selected = None
            queries = flat_tokens
            clip_of_query = torch.arange(clips, device=visual.device).repeat_interleave(
                num_frames * grid * grid
            )
        else:
            if keep_mask.shape[-2:] != (grid, grid):
                keep_mask = F.interpolate(keep_mask, size=(grid, grid), mode="nearest")
            selected = keep_mask.reshape(-1).nonzero().squeeze(1)
            queries = flat_tokens.index_select(0, selected)
            clip_of_query = torch.div(selected, num_frames * grid * grid, rounding_mode="floor")
        query = self._split_heads(self.visual_query(queries))
        # Scores against every clip's audio keys, then each query's own clip: cheaper than copying
        # T keys and values per query (clips are few, queries many).
        scores = torch.einsum("qhd,cthd->qhct", query, audio_key)
        own_clip = clip_of_query.view(-1, 1, 1, 1).expand(-1, self.num_heads, 1, num_frames)
        weights = (scores.gather(2, own_clip).squeeze(2) * self.scale).softmax(dim=-1)
        if clips == 1:
            attended = torch.einsum("qht,thd->qhd", weights, audio_value[0])
        else:
            attended = torch.einsum("qht,qthd->qhd", weights, audio_value.index_select(0, clip_of_query))
        if selected is not None and self.detach_selected:
            attended = attended.detach()
        update = F.linear(attended.flatten(1), self.output_projection.weight)

        new_tokens = tokens.reshape(-1, channels) + self.output_projection.bias
        update = update.to(new_tokens.dtype)  # autocast may give the projection a lower precision
        new_tokens = (
            new_tokens.index_add(0, selected, update) if selected is not None else new_tokens + update
        )
        new_tokens = new_tokens.view(frames, grid * grid, channels)
        if self.spatial_layout:
            guide = new_tokens.transpose(1, 2).reshape(frames, channels, grid, grid)
        else:
            guide = new_tokens.reshape(frames, channels, grid, grid)
        guide = _resize_bilinear(guide, (height, width))
        return guide, new_audio


class PCMANetGuidedFusion(nn.Module):
    """GF: adds the upsampled deeper decoder map and the QSCA guide map to a stage's features."""

    def __init__(self, config: PCMANetConfig, has_deeper_stage: bool):
        super().__init__()
        channels = config.hidden_size
        self.deeper_conv = PCMANetConvLayer(channels, channels) if has_deeper_stage else None
        self.guide_conv = PCMANetConvLayer(channels, channels)
        self.output_conv = PCMANetConvLayer(channels, channels)

    def forward(
        self, features: torch.Tensor, deeper: torch.Tensor | None, guide: torch.Tensor
    ) -> torch.Tensor:
        size = features.shape[-2:]
        fused = features + self.guide_conv(_resize_bilinear(guide, size))
        if self.deeper_conv is not None:
            deeper = _resize_bilinear(deeper, size)
            fused = fused + self.deeper_conv(deeper)
        return self.output_conv(fused)


class PCMANetPredictionHead(nn.Module):
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
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        # Backbone and audio encoder are sub-models: Transformers initialises them with their own
        # `_init_weights`, so only the PCMANet layers arrive here.
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)


class PCMANetForAudioVisualSegmentation(PCMANetPreTrainedModel):
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
        self.grouped_attention = nn.ModuleList(PCMANetAudioVisualGroupedAttention(config) for _ in range(4))
        self.cross_attention = nn.ModuleList(
            PCMANetQuerySelectedCrossAttention(config, size) for size in config.qsca_pool_sizes
        )
        self.fusion = nn.ModuleList(
            PCMANetGuidedFusion(config, has_deeper_stage=stage < 3) for stage in range(4)
        )
        self.heads = nn.ModuleList(PCMANetPredictionHead(config) for _ in range(4))
        self.post_init()
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        # A frozen audio encoder keeps its inference behaviour while the rest trains. Freezing
        # lives here, not only in __init__: from_pretrained replaces every parameter with a fresh
        # one that requires grad, then calls eval().
        if self.audio_encoder is not None and self.config.freeze_audio_encoder:
            self.audio_encoder.eval().requires_grad_(False)
        return self

    def _unconfident(self, stage_logits: torch.Tensor) -> torch.Tensor:
        """CIM: 1 where the stage's probability lies strictly inside the confidence band."""
        if self.config.num_labels == 1:
            probability = stage_logits.sigmoid()
        else:
            probability = stage_logits.softmax(dim=1).amax(dim=1, keepdim=True)
        threshold = self.config.confidence_threshold
        return ((probability <= threshold) & (probability >= 1 - threshold)).to(stage_logits.dtype)

    def _embed_audio(self, input_features, audio_embeds, batch: int, num_frames: int) -> torch.Tensor:
        if (input_features is None) == (audio_embeds is None):
            raise ValueError("Pass exactly one of `input_features` (log-mel) and `audio_embeds`.")
        if audio_embeds is None:
            if self.audio_encoder is None:
                raise ValueError(
                    "This PCMANet has no audio encoder (config.audio_config is None): pass VGGish "
                    "embeddings as `audio_embeds` of shape (B, T, 128) instead of `input_features`."
                )
            _check_shape("input_features", input_features, (batch, num_frames, 1, 96, 64))
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_audio_encoder):
                audio_embeds = self.audio_encoder(input_features=input_features).embeddings
        _check_shape("audio_embeds", audio_embeds, (batch, num_frames, self.config.audio_embed_dim))
        return audio_embeds.reshape(batch * num_frames, -1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_features: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        labeled_frames: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> PCMANetSegmentationOutput | tuple:
        r"""Segment the sounding objects of `B` clips of `T` frames.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(B, T, 3, H, W)`):
                Normalised frames (see `AudioVisualProcessor`).
            input_features (`torch.FloatTensor` of shape `(B, T, 1, 96, 64)`, *optional*):
                One VGGish log-mel example per frame, embedded by the model's audio encoder.
            audio_embeds (`torch.FloatTensor` of shape `(B, T, audio_embed_dim)`, *optional*):
                Precomputed audio embeddings (pass these or `input_features`).
            frame_mask (`torch.Tensor` of shape `(B, T)`, *optional*):
                1 for real frames, 0 for padding (AVSS clips shorter than T). Padding frames'
                visual features are zeroed as in the official AVSS model, and they never count
                in the loss.
            labels (`torch.Tensor` of shape `(B, T, H, W)`, *optional*):
                Ground-truth masks: 0/1 floats when `num_labels == 1`, class ids otherwise.
            labeled_frames (`torch.Tensor` of shape `(B, T)`, *optional*):
                Which frames have ground truth (S4 training: the first only). Defaults to all
                frames (times `frame_mask`).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        batch, num_frames, height, width = _check_pixel_values(pixel_values)
        audio = self.audio_projection(self._embed_audio(input_features, audio_embeds, batch, num_frames))

        feature_maps = self.backbone(pixel_values.flatten(0, 1)).feature_maps
        stage_features = [
            project(features) for project, features in zip(self.stage_projections, feature_maps)
        ]
        if frame_mask is not None:
            _check_shape("frame_mask", frame_mask, (batch, num_frames))
            valid = frame_mask.reshape(-1, 1, 1, 1).to(stage_features[0].dtype)
            stage_features = [features * valid for features in stage_features]
        fused = [
            attention(features, audio) for attention, features in zip(self.grouped_attention, stage_features)
        ]

        stage_logits: list[torch.Tensor] = [None] * 4
        confidence_masks: list[torch.Tensor] = []
        keep_mask = deeper = None
        for stage in reversed(range(4)):
            guide, audio = self.cross_attention[stage](fused[stage], audio, num_frames, keep_mask)
            deeper = self.fusion[stage](fused[stage], deeper, guide)
            stage_logits[stage] = self.heads[stage](deeper)
            if stage > 0:
                unconfident = self._unconfident(stage_logits[stage])
                if keep_mask is not None:
                    keep_mask = (
                        F.interpolate(keep_mask, size=unconfident.shape[-2:], mode="nearest") * unconfident
                    )
                else:
                    keep_mask = unconfident
                confidence_masks.append(keep_mask)

        upsampled = [
            F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False).unflatten(
                0, (batch, num_frames)
            )
            for logits in stage_logits
        ]
        kept_token_ratios = torch.stack([mask.mean() for mask in confidence_masks])
        loss = stage_losses = None
        if labels is not None:
            stage_losses = self._stage_losses(upsampled, labels, labeled_frames, frame_mask)
            loss = (stage_losses * stage_losses.new_tensor(self.config.loss_stage_weights)).sum()

        output = PCMANetSegmentationOutput(
            loss=loss,
            logits=upsampled[0],
            auxiliary_logits=tuple(upsampled[1:]),
            confidence_masks=tuple(mask.unflatten(0, (batch, num_frames)) for mask in confidence_masks),
            kept_token_ratios=kept_token_ratios,
            stage_losses=stage_losses,
        )
        return output if return_dict else output.to_tuple()

    def _stage_losses(self, stage_logits, labels, labeled_frames, frame_mask) -> torch.Tensor:
        """Loss of each stage on the labelled frames, as the official training code computes it.

        Binary: BCE over all labelled pixels plus the mean soft-IoU loss of the labelled frames
        (`1 - (inter + 1) / (union - inter + 1)`). Multi-class: per-frame mean cross-entropy,
        averaged over the labelled frames.
        """
        batch, num_frames, _, height, width = stage_logits[0].shape
        _check_shape("labels", labels, (batch, num_frames, height, width))
        weights = torch.ones(batch, num_frames, device=labels.device)
        if labeled_frames is not None:
            _check_shape("labeled_frames", labeled_frames, (batch, num_frames))
            weights = weights * labeled_frames.to(weights.dtype)
        if frame_mask is not None:
            weights = weights * frame_mask.to(weights.dtype)
        selected = weights.reshape(-1).nonzero().squeeze(1)
        if selected.numel() == 0:
            raise ValueError("No labelled frame in the batch: `labeled_frames` * `frame_mask` is all zero.")

        labels = labels.flatten(0, 1).index_select(0, selected)
        losses = []
        for logits in stage_logits:
            logits = logits.flatten(0, 1).index_select(0, selected)
            if self.config.num_labels == 1:
                if labels.is_floating_point() is False and labels.dtype != torch.bool:
                    labels = labels.float()
                target = labels.to(logits.dtype).unsqueeze(1)
                bce = F.binary_cross_entropy_with_logits(logits, target)
                probability = logits.sigmoid()
                intersection = (probability * target).sum(dim=(2, 3))
                union = (probability + target).sum(dim=(2, 3))
                iou = 1 - (intersection + 1) / (union - intersection + 1)
                losses.append(bce + iou.mean())
            else:
                losses.append(
                    F.cross_entropy(logits, labels.long(), reduction="none").mean(dim=(1, 2)).mean()
                )
        return torch.stack(losses)


def _check_pixel_values(pixel_values: torch.Tensor) -> tuple[int, int, int, int]:
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"pixel_values must be a float tensor of normalised frames, got dtype {pixel_values.dtype} "
            "(use AudioVisualProcessor to normalise uint8 frames)"
        )
    if pixel_values.ndim != 5 or pixel_values.shape[2] != 3:
        raise ValueError(f"pixel_values must have shape (B, T, 3, H, W), got {tuple(pixel_values.shape)}")
    batch, num_frames, _, height, width = pixel_values.shape
    return batch, num_frames, height, width


def _check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...]) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(
            f"{name} must have shape {tuple(expected)} to match pixel_values (B, T, ...), got {tuple(tensor.shape)}"
        )


__all__ = ["PCMANetForAudioVisualSegmentation", "PCMANetPreTrainedModel", "PCMANetSegmentationOutput"]
