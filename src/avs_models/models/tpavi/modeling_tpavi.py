"""TPAVI: the audio-visual segmentation baseline of AVSBench (Zhou et al., ECCV 2022).

Per frame, a Transformers vision backbone gives 4 stage feature maps; each goes through an
"ASPP" (a sum of dilated 3x3 convolutions) to `C = config.hidden_size` channels. On every stage
the temporal pixel-wise audio-visual interaction (TPAVI) lets each pixel of a group of frames
attend to the audio of those frames. A top-down decoder of residual fusion blocks and an output
head give the mask logits.

Shapes use `B` clips of `T` frames (one frame per second of audio), `BT = B * T` frames folded
into the batch, `S` frames per TPAVI group, `C = config.hidden_size`, `L = config.num_labels`,
and `h x w` for a stage's feature map.

The blocks (`TPAVIASPP`, `TPAVIAudioVisualInteraction`, `TPAVIResidualConvUnit`,
`TPAVIFusionBlock`, `TPAVIPredictionHead`) take only sizes, so other models derived from the
AVSBench code build theirs from them (C3N's decoder and head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import load_backbone
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ..audio_utils import AudioEncoderMixin
from ..auto import sub_model_from_config
from ..hub_code import HubModelMixin
from ..inputs import check_pixel_values, check_shape
from ..labels import check_binary_mask, check_class_map, is_semantic_segmentation
from ..losses import labelled_frame_weights, per_frame_cross_entropy
from .configuration_tpavi import TPAVIConfig


@dataclass
class TPAVISegmentationOutput(ModelOutput):
    """Output of [`TPAVIForAudioVisualSegmentation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            `segmentation_loss + avm_loss_weight * avm_loss`, when `labels` are given.
        logits (`torch.FloatTensor` of shape `(B, T, L, H, W)`):
            Mask logits at the input size: sigmoid logits when `L == 1`, class logits otherwise.
        segmentation_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Binary cross-entropy (`L == 1`) or cross-entropy over the labelled frames.
        avm_loss (`torch.FloatTensor` of shape `()`, *optional*):
            The audio-visual matching loss, when `labels` are given and `avm_loss_weight > 0`.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            With `output_hidden_states`: the 4 stage maps the decoder receives, stage 1 first,
            each `(B, T, C, h, w)`: after "ASPP" and TPAVI, rectified (the official `v_map_list`).
        audio_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            With `output_hidden_states`: TPAVI's projected audio of each TPAVI stage, each
            `(B, T, C)` (the official `a_fea_list`).
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            With `output_attentions`: per TPAVI stage, `(B, T, S, h, w)`, the weight of each pixel
            of a frame on the audio of each of the `S` frames of its group (the entries of the
            official `f / N` matrix, whose columns repeat over the pixels of a frame).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    segmentation_loss: torch.FloatTensor | None = None
    avm_loss: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    audio_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class TPAVIASPP(GradientCheckpointingLayer):
    """The official "ASPP" (`Classifier_Module`): the sum of dilated 3x3 convolutions, with no
    batch norm, activation, 1x1 or image-pooling branch."""

    def __init__(self, in_channels: int, channels: int, dilations: list[int]):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, channels, 3, padding=dilation, dilation=dilation) for dilation in dilations
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`(N, in_channels, h, w)` -> `(N, channels, h, w)`."""
        summed = self.convs[0](features)
        for conv in self.convs[1:]:
            summed = summed + conv(features)
        return summed


class TPAVIAudioVisualInteraction(GradientCheckpointingLayer):
    """TPAVI, 'dot' mode: every pixel of a group of frames attends to the audio of those frames.

    With `x` the visual tokens of a group (`N = S * h * w` positions) and `a_t` the projected
    audio of frame `t`, repeated over that frame's pixels: `y = (theta(x) phi(a)^T / N) g(x)`
    (no softmax), then `LayerNorm(x + BN(W_z y))`. The 1x1x1 convolutions of the official code
    are linear maps on channels-last tokens. Since the attention has no softmax and the audio
    keys repeat over a frame's pixels, `(Q K^T) V` is computed as `Q (K^T V)` with the values
    averaged per frame first: the same result without the `N x N` matrix. When the attention
    maps are asked for, the output is computed from them (same result), so they are the
    tensors the forward used.
    """

    def __init__(self, channels: int, audio_dim: int, audio_bias: bool = True, layer_norm_eps: float = 1e-5):
        super().__init__()
        inner = max(channels // 2, 1)
        self.audio_projection = nn.Linear(audio_dim, channels, bias=audio_bias)  # `align_channel`
        self.query = nn.Linear(channels, inner)  # theta
        self.key = nn.Linear(channels, inner)  # phi, applied to the projected audio
        self.value = nn.Linear(channels, inner)  # g
        self.output = nn.Linear(inner, channels)  # W_z's convolution
        self.output_norm = nn.BatchNorm1d(channels)  # W_z's batch norm
        self.layer_norm = nn.LayerNorm(channels, eps=layer_norm_eps)

    def forward(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor,
        frames_per_group: int | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """visual `(B, T, C, h, w)`, audio `(B, T, audio_dim)`; attention within groups of
        `S = frames_per_group` consecutive frames (`S` divides `T`; `None`: whole clips).

        Returns the fused maps `(B, T, C, h, w)`, the projected audio `(B, T, C)` and, when
        asked, the attention of every pixel on the audio of each frame of its group
        `(B, T, S, h, w)` (entry `[b, t, s, y, x]`: pixel `(y, x)` of frame `t` on frame `s`).
        """
        batch, num_frames, channels, height, width = visual.shape
        frames = frames_per_group or num_frames
        groups = batch * num_frames // frames
        tokens = visual.permute(0, 1, 3, 4, 2).reshape(groups, frames * height * width, channels)
        queries = self.query(tokens)
        values = self.value(tokens)
        audio_features = self.audio_projection(audio)
        keys = self.key(audio_features).reshape(groups, frames, -1)
        # Per-frame means keep half-precision sums small.
        frame_values = values.view(groups, frames, height * width, -1).mean(dim=2)
        attention = None
        if output_attentions:
            scores = torch.einsum("gshwc,gtc->gsthw", queries.view(groups, frames, height, width, -1), keys)
            attention = (scores / (frames * height * width)).view(batch, num_frames, frames, height, width)
            # y_i = sum_t attention[i, t] * (sum of g over frame t's pixels)
            grouped = attention.view(groups, frames, frames, height, width) * (height * width)
            attended = torch.einsum("gsthw,gtc->gshwc", grouped, frame_values).reshape(
                groups, -1, queries.shape[-1]
            )
        else:
            attended = queries @ (keys.transpose(1, 2) @ frame_values / frames)
        update = self.output_norm(self.output(attended).reshape(-1, channels)).view_as(tokens)
        fused = self.layer_norm(tokens + update)
        fused = fused.view(batch, num_frames, height, width, channels).permute(0, 1, 4, 2, 3)
        return fused, audio_features, attention


class TPAVIResidualConvUnit(nn.Module):
    """Two 3x3 convolutions with pre-activation. The official unit rectifies its input in place,
    so its skip connection carries the rectified input: `conv2(relu(conv1(relu(x)))) + relu(x)`."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        rectified = F.relu(features)
        return self.conv2(F.relu(self.conv1(rectified))) + rectified


class TPAVIFusionBlock(GradientCheckpointingLayer):
    """Top-down decoder step (`FeatureFusionBlock`): add the refined skip map, refine, and upsample
    bilinearly with aligned corners to `output_size` (the official code doubles the size)."""

    def __init__(self, channels: int, has_skip: bool):
        super().__init__()
        self.skip_unit = TPAVIResidualConvUnit(channels) if has_skip else None
        self.output_unit = TPAVIResidualConvUnit(channels)

    def forward(
        self, features: torch.Tensor, skip: torch.Tensor | None, output_size: tuple[int, int]
    ) -> torch.Tensor:
        if self.skip_unit is not None:
            features = features + self.skip_unit(skip)
        features = self.output_unit(features)
        return F.interpolate(features, size=output_size, mode="bilinear", align_corners=True)


class TPAVIPredictionHead(nn.Module):
    """Output head (`output_conv`): 3x3 conv, bilinear x2 upsampling (corners not aligned),
    3x3 conv, ReLU, 1x1 classifier."""

    def __init__(self, channels: int, hidden_sizes: list[int], num_labels: int):
        super().__init__()
        first, second = hidden_sizes
        self.conv1 = nn.Conv2d(channels, first, 3, padding=1)
        self.conv2 = nn.Conv2d(first, second, 3, padding=1)
        self.classifier = nn.Conv2d(second, num_labels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.conv1(features)
        hidden = F.interpolate(hidden, scale_factor=2, mode="bilinear", align_corners=False)
        return self.classifier(F.relu(self.conv2(hidden)))


class TPAVIPreTrainedModel(HubModelMixin, PreTrainedModel):
    config_class = TPAVIConfig
    base_model_prefix = "tpavi"
    main_input_name = "pixel_values"
    input_modalities = ("image", "audio")
    supports_gradient_checkpointing = True
    _no_split_modules = [  # noqa: RUF012 (Transformers reads this class attribute)
        "TPAVIASPP",
        "TPAVIAudioVisualInteraction",
        "TPAVIFusionBlock",
        "TPAVIPredictionHead",
    ]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Backbone and audio encoder are sub-models: Transformers initialises them with their own
        # `_init_weights`, so only the TPAVI layers arrive here (children before their parents).
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm1d):
            # TPAVI's W_z batch norm starts at zero scale, so each TPAVI module starts as the
            # identity plus LayerNorm (the official initialisation).
            init.zeros_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        if isinstance(module, TPAVIASPP):
            for conv in module.convs:  # official: N(0, 0.01)
                init.normal_(conv.weight, mean=0.0, std=0.01)


class TPAVIForAudioVisualSegmentation(AudioEncoderMixin, TPAVIPreTrainedModel):
    """TPAVI with its decoder: clips and their audio in, sounding-object masks out."""

    def __init__(self, config: TPAVIConfig):
        super().__init__(config)
        self.backbone = load_backbone(config)
        self.audio_encoder = sub_model_from_config(config.audio_config) if config.audio_config else None
        channels = config.hidden_size
        self.aspp = nn.ModuleList(
            TPAVIASPP(in_channels, channels, config.aspp_dilations) for in_channels in self.backbone.channels
        )
        self.tpavi_blocks = nn.ModuleDict(
            {
                str(stage): TPAVIAudioVisualInteraction(
                    channels, config.audio_embed_dim, config.tpavi_audio_bias, config.layer_norm_eps
                )
                for stage in config.tpavi_stages
            }
        )
        # decoder[i] refines stage i; the deepest stage has no skip input.
        self.decoder = nn.ModuleList(TPAVIFusionBlock(channels, has_skip=stage < 3) for stage in range(4))
        self.head = TPAVIPredictionHead(channels, config.head_hidden_sizes, config.num_labels)
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
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> TPAVISegmentationOutput | tuple:
        r"""Segment the sounding objects of `B` clips of `T` frames.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(B, T, 3, H, W)`):
                Normalised frames (see `AudioVisualProcessor`). `T` must be a multiple of
                `config.tpavi_frames_per_group` (5 by default).
            input_features (`torch.FloatTensor` of shape `(B, T, 1, 96, 64)`, *optional*):
                One VGGish log-mel example per frame, embedded by the model's audio encoder.
            audio_embeds (`torch.FloatTensor` of shape `(B, T, audio_embed_dim)`, *optional*):
                Precomputed audio embeddings (pass these or `input_features`).
            frame_mask (`torch.Tensor` of shape `(B, T)`, *optional*):
                1 for real frames, 0 for padding (AVSS clips shorter than T). As in the official
                AVSS code, padded frames' audio, stage features, TPAVI outputs, decoder maps and
                logits are zeroed, and they never count in the loss.
            labels (`torch.Tensor` of shape `(B, T, H, W)`, *optional*):
                Ground truth: 0/1 masks when `num_labels == 1`, class ids otherwise (255 ignored).
            labeled_frames (`torch.Tensor` of shape `(B, T)`, *optional*):
                Which frames have ground truth (S4 training: the first only). Defaults to all
                frames (times `frame_mask`).
            output_attentions (`bool`, *optional*):
                Also return TPAVI's attention maps (`attentions`).
            output_hidden_states (`bool`, *optional*):
                Also return the stage maps after TPAVI and TPAVI's audio features.
        """
        config = self.config
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else config.return_dict
        pixel_values = check_pixel_values(pixel_values, self.dtype)
        batch, num_frames, _, height, width = pixel_values.shape
        group_size = config.tpavi_frames_per_group or num_frames
        if config.tpavi_stages and num_frames % group_size:
            raise ValueError(
                f"TPAVI attends over groups of {group_size} frames (config.tpavi_frames_per_group), so "
                f"the clip length T must be a multiple of it; pixel_values has T={num_frames}"
            )
        audio_embeds = self._embed_audio(input_features, audio_embeds, batch, num_frames)
        frame_flags = None
        if frame_mask is not None:
            check_shape("frame_mask", frame_mask, (batch, num_frames))
            frame_flags = frame_mask.to(device=audio_embeds.device, dtype=audio_embeds.dtype)
            # The official AVSS loops zero the padded frames' audio before the model.
            audio_embeds = _mask_frames(audio_embeds, frame_flags)
        feature_maps = self.backbone(pixel_values.flatten(0, 1)).feature_maps
        stage_maps, audio_features, attentions = [], {}, []
        for stage, (aspp, features) in enumerate(zip(self.aspp, feature_maps)):
            features = _mask_frames(aspp(features).unflatten(0, (batch, num_frames)), frame_flags)
            if str(stage) in self.tpavi_blocks:
                fused, audio_features[stage], attention = self.tpavi_blocks[str(stage)](
                    features, audio_embeds, config.tpavi_frames_per_group, output_attentions
                )
                features = _mask_frames(fused, frame_flags)
                if attention is not None:
                    attentions.append(attention)
            # The official decoder's residual units rectify these maps in place, so the maps it
            # returns (and the AVM loss compares) are rectified ones.
            stage_maps.append(F.relu(features))

        flat_flags = None if frame_flags is None else frame_flags.flatten()
        decoded = None
        for stage in reversed(range(4)):
            if stage > 0:
                output_size = tuple(stage_maps[stage - 1].shape[-2:])
            else:
                output_size = tuple(2 * size for size in stage_maps[0].shape[-2:])
            stage_map = stage_maps[stage].flatten(0, 1)
            if decoded is None:
                decoded = self.decoder[stage](stage_map, None, output_size)
            else:
                decoded = self.decoder[stage](decoded, stage_map, output_size)
            decoded = _mask_frames(decoded, flat_flags)
        logits = self.head(decoded)
        if tuple(logits.shape[-2:]) != (height, width):
            # Input sizes that are not a multiple of 32 (224 in every official config).
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        logits = _mask_frames(logits, flat_flags).unflatten(0, (batch, num_frames))

        loss = segmentation_loss = avm_loss = None
        if labels is not None:
            segmentation_loss, avm_loss = self._losses(
                logits, labels, labeled_frames, frame_mask, stage_maps, audio_features
            )
            loss = (
                segmentation_loss
                if avm_loss is None
                else segmentation_loss + config.avm_loss_weight * avm_loss
            )

        output = TPAVISegmentationOutput(
            loss=loss,
            logits=logits,
            segmentation_loss=segmentation_loss,
            avm_loss=avm_loss,
            hidden_states=tuple(stage_maps) if output_hidden_states else None,
            audio_hidden_states=tuple(audio_features.values()) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()

    def _losses(
        self, logits, labels, labeled_frames, frame_mask, stage_maps, audio_features
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The segmentation loss and (when `avm_loss_weight > 0`) the AVM loss, in float32.

        Segmentation: binary cross-entropy (`L == 1`; the official S4 code on the first frame,
        MS3 on all five) or cross-entropy (AVSS: per-frame mean over the frame's pixels, those
        labelled `IGNORE_INDEX` adding nothing), averaged over the labelled frames.
        """
        batch, num_frames, num_labels, height, width = logits.shape
        check_shape("labels", labels, (batch, num_frames, height, width))
        weights = labelled_frame_weights(batch, num_frames, labeled_frames, frame_mask, logits.device)
        frame_logits = logits.flatten(0, 1).float()
        if not is_semantic_segmentation(self.config):
            target = (
                check_binary_mask("labels", labels)
                .flatten(0, 1)
                .to(device=logits.device, dtype=torch.float32)
            )
            per_frame = F.binary_cross_entropy_with_logits(frame_logits[:, 0], target, reduction="none")
            per_frame = per_frame.mean(dim=(1, 2))
        else:
            class_ids = check_class_map("labels", labels, num_labels).flatten(0, 1).to(logits.device)
            per_frame = per_frame_cross_entropy(frame_logits, class_ids)
        segmentation_loss = (per_frame * weights).sum() / weights.sum()
        if self.config.avm_loss_weight == 0:
            return segmentation_loss, None
        return segmentation_loss, self._audio_visual_matching_loss(
            frame_logits, stage_maps, audio_features, weights
        )

    def _audio_visual_matching_loss(
        self,
        frame_logits: torch.Tensor,
        stage_maps: list[torch.Tensor],
        audio_features: dict[int, torch.Tensor],
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """AVM: `KL(softmax(audio) || softmax(masked visual))` per frame, as the official MS3 and
        AVSS train scripts configure it (`--masked_av_flag --kl_flag`, average mask pooling, no
        feature normalisation), averaged over `avm_loss_stages`.

        The masked visual vector of a frame is the spatial mean of its stage map times the
        predicted mask pooled to the stage's size. Binary (MS3 code): the mask is the sigmoid
        of the average-pooled logits (gradients flow through it), and the loss is summed over
        the labelled frames. Multi-class (AVSS code): the mask is 1 where the arg-max class is
        not the background (class 0), and the loss is averaged over the labelled frames.
        """
        semantic = is_semantic_segmentation(self.config)
        if semantic:
            mask_source = (frame_logits.argmax(dim=1, keepdim=True) != 0).float()
        else:
            mask_source = frame_logits
        stage_losses = []
        for stage in self.config.avm_loss_stages:
            visual = stage_maps[stage].flatten(0, 1).float()
            mask = F.adaptive_avg_pool2d(mask_source, visual.shape[-2:])
            if not semantic:
                mask = mask.sigmoid()
            masked_visual = (visual * mask).mean(dim=(2, 3))
            audio = audio_features[stage].float().flatten(0, 1)
            per_frame = F.kl_div(
                masked_visual.log_softmax(dim=-1), audio.softmax(dim=-1), reduction="none"
            ).sum(-1)
            stage_loss = (per_frame * weights).sum()
            if semantic:
                stage_loss = stage_loss / weights.sum()
            stage_losses.append(stage_loss)
        return torch.stack(stage_losses).mean()


def _mask_frames(features: torch.Tensor, frame_flags: torch.Tensor | None) -> torch.Tensor:
    """Zero padded frames: `features` `(B, T, ...)` or `(BT, ...)` times `frame_flags` of shape
    `(B, T)` or `(BT,)` (no-op without a frame mask)."""
    if frame_flags is None:
        return features
    flags = frame_flags.reshape(*frame_flags.shape, *[1] * (features.dim() - frame_flags.dim()))
    return features * flags.to(features.device)


__all__ = [
    "TPAVIASPP",
    "TPAVIAudioVisualInteraction",
    "TPAVIForAudioVisualSegmentation",
    "TPAVIFusionBlock",
    "TPAVIPreTrainedModel",
    "TPAVIPredictionHead",
    "TPAVIResidualConvUnit",
    "TPAVISegmentationOutput",
]
