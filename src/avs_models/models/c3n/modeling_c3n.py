"""C3N: Cross-modal Cognitive Consensus guided Network for audio-visual segmentation.

Pipeline per frame: a Transformers vision backbone (PVT-v2 or Swin) gives 4 stage feature maps
and, through its ImageNet head, visual class logits. C3IM combines the visual and audio class
confidences with a label-name similarity matrix into one unified visual class per frame. CCAM
takes the gradient of that class's logit with respect to the last block output of every backbone
stage (one `torch.autograd.grad` call), averages it over space into channel weights and
re-weights the stage features (channel then spatial attention). ASPP, an audio-visual non-local
block per stage, a top-down fusion decoder and a small convolutional head give one mask logit map
per frame. The official C3N decoder and head are AVSBench's, so they are TPAVI's blocks
(`TPAVIFusionBlock`, `TPAVIPredictionHead`), with the same parameter names.

The backbone runs stage by stage here, not through its own `forward`: Transformers' PVT-v2 and
Swin backbones return each stage after its LayerNorm, while CCAM needs the last block's output,
before that norm. A zero "gradient probe" `(N, 1, C_k)` that requires grad is added to each of
those outputs, broadcast over the tokens: the gradient of the chosen logit with respect to a probe
is the gradient with respect to the block output summed over the tokens, which CCAM averages
anyway. Probes are leaves made before the backbone runs, so this works with a frozen backbone,
under `torch.no_grad()`, and under `torch.compile` (where they are inputs of the compiled backbone
graph, and `autograd.grad` runs between two graphs).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForAudioClassification, PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import load_backbone
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ..audio_utils import AudioEncoderMixin, with_leading_dims
from ..auto import sub_model_from_config
from ..hub_code import HubModelMixin
from ..inputs import check_finite, check_pixel_values, check_shape
from ..label_names import AUDIOSET_CLASSES, IMAGENET_1K_CLASSES
from ..labels import check_binary_mask
from ..tpavi.modeling_tpavi import TPAVIFusionBlock, TPAVIPredictionHead
from .configuration_c3n import C3NConfig, check_num_labels
from .label_similarity import compute_label_similarity

SUPPORTED_BACKBONES = ("pvt_v2", "swin")
# Classes per modality that the paper's Fig. 6 shows for the consensus of a frame.
CONSENSUS_TOP_CLASSES = 5
# Smallest L2 norm of the Grad-CAM weights (computed in float32, whatever the model's dtype).
CCAM_NORM_EPS = 1e-12

EXPORT_HINT = (
    "C3N's CCAM takes a gradient inside forward (Grad-CAM: torch.autograd.grad of the chosen class's "
    "logit with respect to the backbone stages). torch.export traces the model above autograd, where the "
    "tensors that this backward reads are not recorded (it fails with 'We found a fake tensor in the "
    "exported program constant's list'), and the ONNX exporter uses torch.export. What exports: the model "
    "with CCAM weights given as an input (`ccam_weights=`, e.g. from an eager run), or a model with "
    "config.consensus_mode='none' (no CCAM, the Table II ablation)."
)


@dataclass
class C3NSegmentationOutput(ModelOutput):
    """
    Output of [`C3NForAudioVisualSegmentation`]. `B` is the batch size, `T` the frames per clip,
    `h_k, w_k` the size of backbone stage `k` (stride 4, 8, 16, 32) and `K` = 5 (or fewer when a
    head has fewer classes).

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            BCE + Dice loss over the labelled frames, when `labels` were given.
        logits (`torch.FloatTensor` of shape `(B, T, 1, height, width)`):
            Mask logits at the input resolution.
        unified_labels (`torch.LongTensor` of shape `(B, T)`, *optional*):
            Visual class chosen per frame by the cognitive consensus (`None` when
            `consensus_mode="none"`).
        visual_logits (`torch.FloatTensor` of shape `(B, T, num_visual_classes)`):
            Logits of the visual classification head.
        ccam_weights (`tuple(torch.FloatTensor)`, *optional*):
            Per stage, the class-activated channel weights (spatially averaged gradients, before
            normalisation), each `(B, T, C_k)` in float32.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, with `output_hidden_states=True`):
            The 4 backbone stage feature maps (after each stage's norm, before CCAM), each
            `(B, T, C_k, h_k, w_k)`.
        decoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*, with `output_hidden_states=True`):
            The outputs of the 4 top-down fusion blocks, deepest first, each `(B, T, hidden_size, h, w)`
            with `(h, w)` twice the size of the stage it refines (the last one is at stride 2).
        attentions (`tuple(torch.FloatTensor)`, *optional*, with `output_attentions=True`):
            CCAM's spatial attention per stage (paper Fig. 7): the sigmoid of the channel mean of the
            channel-re-weighted stage features, each `(B, T, h_k, w_k)`. `None` without CCAM.
        consensus_top_visual_classes (`torch.LongTensor` of shape `(B, T, K)`, *optional*, with `output_attentions=True`):
            The K visual classes with the highest confidence per frame (paper Fig. 6), best first.
        consensus_top_visual_confidences (`torch.FloatTensor` of shape `(B, T, K)`, *optional*):
            Their re-weighted confidences `softmax(visual_logits) ** consensus_visual_exponent`.
        consensus_top_audio_classes (`torch.LongTensor` of shape `(B, T, K)`, *optional*):
            The K audio classes with the highest confidence per frame, best first.
        consensus_top_audio_confidences (`torch.FloatTensor` of shape `(B, T, K)`, *optional*):
            Their re-weighted confidences `softmax(audio scores) ** consensus_audio_exponent`.
        consensus_top_pair_scores (`torch.FloatTensor` of shape `(B, T, K, K)`, *optional*):
            The consensus score of each (top visual class, top audio class) pair:
            audio confidence x label similarity x visual confidence; rows follow
            `consensus_top_visual_classes`, columns `consensus_top_audio_classes`. The unified label
            is the visual class of the best pair over all classes (`unified_labels`). Like every
            consensus field, `None` when `consensus_mode` is not `"audio_visual"`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    unified_labels: torch.LongTensor | None = None
    visual_logits: torch.FloatTensor | None = None
    ccam_weights: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    consensus_top_visual_classes: torch.LongTensor | None = None
    consensus_top_visual_confidences: torch.FloatTensor | None = None
    consensus_top_audio_classes: torch.LongTensor | None = None
    consensus_top_audio_confidences: torch.FloatTensor | None = None
    consensus_top_pair_scores: torch.FloatTensor | None = None


@dataclass
class C3NConsensusTopClasses(ModelOutput):
    """The strongest classes of both heads and their pair scores, per row (see `C3NSegmentationOutput`)."""

    visual_classes: torch.LongTensor | None = None
    visual_confidences: torch.FloatTensor | None = None
    audio_classes: torch.LongTensor | None = None
    audio_confidences: torch.FloatTensor | None = None
    pair_scores: torch.FloatTensor | None = None


def _named_labels(config) -> list[str] | None:
    """`id2label` names in id order, or None when they are Transformers' placeholders (`LABEL_0`, ...)."""
    names = [config.id2label[index] for index in range(config.num_labels)]
    return None if all(name == f"LABEL_{index}" for index, name in enumerate(names)) else names


class C3NASPP(GradientCheckpointingLayer):
    """Atrous spatial pyramid pooling: image-level branch, 1x1 branch, 3 dilated 3x3 branches."""

    def __init__(self, in_channels: int, channels: int, dilations: list[int]):
        super().__init__()
        self.image_pool_conv = nn.Conv2d(in_channels, channels, 1)
        self.pointwise_conv = nn.Conv2d(in_channels, channels, 1)
        self.atrous_convs = nn.ModuleList(
            nn.Conv2d(in_channels, channels, 3, padding=dilation, dilation=dilation) for dilation in dilations
        )
        self.projection = nn.Conv2d(channels * (2 + len(dilations)), channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features `(N, in_channels, H, W)` -> `(N, channels, H, W)`."""
        pooled = self.image_pool_conv(features.mean(dim=(2, 3), keepdim=True))
        branches = [pooled.expand(-1, -1, *features.shape[2:]), self.pointwise_conv(features)]
        branches += [conv(features) for conv in self.atrous_convs]
        return self.projection(torch.cat(branches, dim=1))


class C3NAudioVisualNonLocal(nn.Module):
    """Cross-modal non-local block (TPAVI) on one stage, over all frames of a clip jointly.

    Queries come from the visual tokens, keys from the projected audio (repeated over space in the
    official code) and values from the visual tokens; the attention is a dot product divided by the
    number of positions. Because the attention has no softmax, `(Q K^T) V / N` is computed as
    `Q (K^T (V / N))`, and audio keys that repeat over space are summed per frame first: the same
    result without the `(THW)^2` matrix. Dividing the values by `N` first keeps the sums in range
    in half precision. Padded frames (`frame_mask` 0) give no keys or values and are not counted
    in N.

    Not a checkpointing layer: recomputing its BatchNorm in training would update the running
    statistics twice.
    """

    def __init__(self, channels: int, audio_dim: int, layer_norm_eps: float = 1e-5):
        super().__init__()
        inner = max(channels // 2, 1)
        self.audio_projection = nn.Linear(audio_dim, channels)
        self.query = nn.Linear(channels, inner)
        self.key = nn.Linear(channels, inner)
        self.value = nn.Linear(channels, inner)
        self.output = nn.Linear(inner, channels)
        self.output_norm = nn.BatchNorm1d(channels)
        self.layer_norm = nn.LayerNorm(channels, eps=layer_norm_eps)

    def forward(
        self, features: torch.Tensor, audio: torch.Tensor | None, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """features: `(B, T, C, H, W)`; audio: `(B, T, audio_dim)` or `None` (visual self-attention);
        frame_mask: `(B, T)`, 1 for real frames, or `None` (all real). Returns `(B, T, C, H, W)`."""
        batch, frames, channels, height, width = features.shape
        tokens = features.permute(0, 1, 3, 4, 2).reshape(batch, frames * height * width, channels)
        queries = self.query(tokens)
        values = self.value(tokens)
        if frame_mask is None:
            values = values / tokens.shape[1]
        else:
            real = frame_mask.to(values.dtype)
            num_positions = (real.sum(dim=1) * height * width).clamp(min=1)[:, None, None]
            values = values * real.repeat_interleave(height * width, dim=1)[:, :, None] / num_positions
        if audio is None:
            context = self.key(tokens).transpose(1, 2) @ values
        else:
            audio_keys = self.key(self.audio_projection(audio))  # (B, T, inner)
            values_per_frame = values.view(batch, frames, height * width, -1).sum(dim=2)
            context = audio_keys.transpose(1, 2) @ values_per_frame
        attended = queries @ context
        fused = self.output_norm(self.output(attended).reshape(-1, channels)).view_as(tokens) + tokens
        fused = self.layer_norm(fused)
        return fused.view(batch, frames, height, width, channels).permute(0, 1, 4, 2, 3)


class C3NPreTrainedModel(HubModelMixin, PreTrainedModel):
    config_class = C3NConfig
    base_model_prefix = "c3n"
    main_input_name = "pixel_values"
    input_modalities = ("image", "audio")
    supports_gradient_checkpointing = True
    # Modules whose forward combines their children's outputs stay on one device.
    _no_split_modules = [  # noqa: RUF012 (Transformers reads this class attribute)
        "PvtV2BlockLayer",
        "SwinLayer",
        "C3NASPP",
        "C3NAudioVisualNonLocal",
        "TPAVIFusionBlock",
    ]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm1d):
            # Only the fusion blocks' output norm is a BatchNorm: zero scale, so each fusion block
            # starts as residual + LayerNorm (the official initialisation).
            init.zeros_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        if isinstance(module, C3NForAudioVisualSegmentation):
            init.zeros_(module.label_similarity)


class C3NForAudioVisualSegmentation(AudioEncoderMixin, C3NPreTrainedModel):
    """C3N for audio-visual segmentation (S4 / MS3: one sounding-object mask per frame).

    The visual class vs audio class similarity matrix is the buffer `label_similarity`
    `(num_visual_classes, num_audio_classes)`, saved with the model. Fill it once with
    [`~C3NForAudioVisualSegmentation.set_label_similarity`] (a precomputed matrix, e.g. from
    `load_official_similarity_matrix`) or
    [`~C3NForAudioVisualSegmentation.compute_label_similarity_from_names`].
    """

    def __init__(self, config: C3NConfig):
        super().__init__(config)
        check_num_labels(config.num_labels)  # config.num_labels may have been set after the config was built
        model_type = config.backbone_config.model_type
        if model_type not in SUPPORTED_BACKBONES:
            raise ValueError(
                f"C3N supports {SUPPORTED_BACKBONES} backbones, got backbone model_type {model_type!r}"
            )
        self.backbone = load_backbone(config)
        self.audio_encoder = (
            sub_model_from_config(config.audio_config, AutoModelForAudioClassification)
            if config.audio_config
            else None
        )
        stage_channels = list(self.backbone.channels)
        if len(stage_channels) != 4:
            raise ValueError(f"the backbone must return 4 stage feature maps, got {len(stage_channels)}")
        self.visual_classifier = nn.Linear(stage_channels[-1], config.num_visual_classes)
        channels = config.hidden_size
        self.aspp = nn.ModuleList(C3NASPP(c, channels, config.aspp_dilations) for c in stage_channels)
        self.fusion = nn.ModuleList(
            C3NAudioVisualNonLocal(channels, config.audio_embed_dim) for _ in stage_channels
        )
        # decoder[i] refines stage i; the deepest stage has no skip input.
        self.decoder = nn.ModuleList(TPAVIFusionBlock(channels, has_skip=i < 3) for i in range(4))
        self.head = TPAVIPredictionHead(channels, config.head_hidden_sizes, num_labels=1)
        self.register_buffer(
            "label_similarity",
            torch.zeros(config.num_visual_classes, config.num_audio_classes),
            persistent=True,
        )
        self.gradient_checkpointing = False
        self.post_init()
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)  # also keeps a frozen audio encoder frozen (AudioEncoderMixin)
        # Set here, not only in __init__: from_pretrained replaces every parameter with a fresh one
        # that requires grad, then calls eval().
        if self.config.freeze_visual_classifier:
            self.visual_classifier.requires_grad_(False)
        return self

    # ----------------------------------------------------------------- label similarity
    def set_label_similarity(self, matrix: torch.Tensor) -> None:
        """Store a `(num_visual_classes, num_audio_classes)` similarity matrix in the model."""
        expected = tuple(self.label_similarity.shape)
        if not isinstance(matrix, torch.Tensor) or tuple(matrix.shape) != expected:
            shape = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
            raise ValueError(
                f"matrix must be a tensor of shape {expected} (visual classes x audio classes), got {shape}"
            )
        if not bool(torch.isfinite(matrix).all()):
            raise ValueError("matrix holds NaN or infinite similarities: every entry must be a finite number")
        self.label_similarity.copy_(matrix.detach().to(self.label_similarity))

    def compute_label_similarity_from_names(
        self,
        visual_label_names: list[str] | None = None,
        audio_label_names: list[str] | None = None,
        label_embedding_model: str | None = None,
    ) -> torch.Tensor:
        """Embed the class names with sentence-transformers and store their cosine similarities.

        Names default to `config.visual_label_names` / `config.audio_label_names`, else the audio
        encoder's `id2label` when it holds real names, else the bundled ImageNet-1k (1000 visual
        classes) and AudioSet (527 audio classes) names; the model defaults to
        `config.label_embedding_model` (the offline all-MiniLM-L6-v2 package when `None`).
        """
        config = self.config
        visual = visual_label_names if visual_label_names is not None else config.visual_label_names
        audio = audio_label_names if audio_label_names is not None else config.audio_label_names
        if audio is None and config.audio_config is not None:
            audio = _named_labels(config.audio_config)
        # The heads of the published models: ImageNet-1k and AudioSet.
        if visual is None and config.num_visual_classes == len(IMAGENET_1K_CLASSES):
            visual = list(IMAGENET_1K_CLASSES)
        if audio is None and config.num_audio_classes == len(AUDIOSET_CLASSES):
            audio = list(AUDIOSET_CLASSES)
        if visual is None or audio is None:
            raise ValueError(
                "visual_label_names and audio_label_names are needed (pass them or set them in the config)"
            )
        matrix = compute_label_similarity(
            visual, audio, label_embedding_model or config.label_embedding_model
        )
        self.set_label_similarity(matrix)
        return matrix

    # ----------------------------------------------------------------- input checks
    def _check_inputs(self, pixel_values, audio_embeds, audio_logits, labels, labeled_frames, frame_mask):
        batch, frames = pixel_values.shape[:2]
        config = self.config
        needed = {
            "audio_embeds": (audio_embeds, config.audio_embed_dim, config.use_audio_features),
            "audio_logits": (audio_logits, config.num_audio_classes, config.consensus_mode == "audio_visual"),
        }
        for name, (tensor, width, required) in needed.items():
            if tensor is None:
                if required:
                    raise ValueError(
                        f"`{name}` of shape ({batch}, {frames}, {width}) is required by this config"
                    )
                continue
            check_shape(name, tensor, (batch, frames, width))
            if not tensor.is_floating_point():
                raise TypeError(f"`{name}` must be a floating point tensor, got {tensor.dtype}")
            check_finite(name, tensor)
        if labels is not None:
            check_shape("labels", labels, (batch, frames, *pixel_values.shape[3:]))
            check_binary_mask("labels", labels)
        for name, mask in (("labeled_frames", labeled_frames), ("frame_mask", frame_mask)):
            if mask is not None:
                check_shape(name, mask, (batch, frames))

    def _check_ccam_weights(self, ccam_weights, batch: int, frames: int) -> None:
        channels = list(self.backbone.channels)
        if not isinstance(ccam_weights, (tuple, list)) or len(ccam_weights) != len(channels):
            raise ValueError(f"`ccam_weights` must be a tuple of {len(channels)} tensors (one per stage)")
        for stage, (weights, width) in enumerate(zip(ccam_weights, channels)):
            check_shape(f"ccam_weights[{stage}]", weights, (batch, frames, width))
            check_finite(f"ccam_weights[{stage}]", weights)

    def _check_gradient_checkpointing(self) -> None:
        keywords = getattr(self._gradient_checkpointing_func, "keywords", {})
        # torch.utils.checkpoint's own default (use_reentrant unset) is the reentrant variant.
        if keywords.get("use_reentrant", True) is not False:
            raise ValueError(
                "C3N's CCAM calls torch.autograd.grad inside forward, which reentrant activation checkpointing "
                "does not allow: enable checkpointing with {'use_reentrant': False}, the default of "
                "model.activation_checkpointing_enable()"
            )

    # ----------------------------------------------------------------- audio
    def _precomputed_audio_hint(self, batch: int, frames: int) -> str:
        return (
            f"`audio_embeds` ({batch}, {frames}, {self.config.audio_embed_dim}) and `audio_logits` "
            f"({batch}, {frames}, {self.config.num_audio_classes})"
        )

    # ----------------------------------------------------------------- backbone, stage by stage
    def _call_block(self, block: nn.Module, *args, **kwargs):
        """Run one backbone block, through activation checkpointing when it is on (Swin's blocks are
        checkpointing layers themselves; PVT-v2 checkpoints whole stages, which C3N runs block by block)."""
        if (
            self.gradient_checkpointing
            and self.training
            and torch.is_grad_enabled()
            and not isinstance(block, GradientCheckpointingLayer)
        ):
            return self._gradient_checkpointing_func(partial(block, **kwargs), *args)
        return block(*args, **kwargs)

    def _gradient_probes(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """One zero leaf `(N, 1, C_k)` per stage that requires grad (see the module docstring), on the
        frames' device (with a device map, each is moved to its stage's device when added)."""
        return [
            torch.zeros(
                len(pixel_values),
                1,
                channels,
                dtype=pixel_values.dtype,
                device=pixel_values.device,
                requires_grad=True,
            )
            for channels in self.backbone.channels
        ]

    def _run_backbone(
        self, pixel_values: torch.Tensor, probes: list[torch.Tensor] | None, record_graph: bool
    ) -> list[torch.Tensor]:
        """Backbone stage maps `[(N, C_k, h_k, w_k)]` of frames `(N, 3, H, W)`, the same as the
        backbone's `feature_maps`. With `probes`, `probes[k]` is added to stage k's last block output.

        Nothing before the first probe needs a graph unless the caller records one
        (`record_graph`), so stage 1 of an inference forward keeps no activations for backward.
        """
        if self.backbone.config.model_type == "pvt_v2":
            return self._run_pvt_v2(pixel_values, probes, record_graph)
        return self._run_swin(pixel_values, probes, record_graph)

    def _run_pvt_v2(self, pixel_values, probes, record_graph) -> list[torch.Tensor]:
        feature_maps = []
        hidden = pixel_values
        for index, stage in enumerate(self.backbone.encoder.layers):
            with torch.set_grad_enabled(record_graph or (probes is not None and index > 0)):
                tokens, height, width = stage.patch_embedding(hidden)
                for block in stage.blocks:
                    tokens = self._call_block(block, tokens, height, width)[0]
            if probes is not None:
                tokens = tokens + probes[index].to(tokens)
            hidden = stage.layer_norm(tokens).reshape(len(tokens), height, width, -1).permute(0, 3, 1, 2)
            hidden = hidden.contiguous()
            feature_maps.append(hidden)
        return feature_maps

    def _run_swin(self, pixel_values, probes, record_graph) -> list[torch.Tensor]:
        swin = self.backbone.swin
        feature_maps = []
        with torch.set_grad_enabled(record_graph):
            tokens, (height, width) = swin.embeddings(pixel_values)
        for index, (name, stage) in enumerate(zip(self.backbone.out_features, swin.encoder.layers)):
            with torch.set_grad_enabled(record_graph or (probes is not None and index > 0)):
                for block in stage.blocks:
                    tokens = self._call_block(block, tokens, (height, width), always_partition=True)[0]
            if probes is not None:
                tokens = tokens + probes[index].to(tokens)
            normed = self.backbone.hidden_states_norms[name](tokens)
            feature_maps.append(normed.view(len(tokens), height, width, -1).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                tokens = stage.downsample(tokens, (height, width))
                height, width = (height + 1) // 2, (width + 1) // 2
        return feature_maps

    # ----------------------------------------------------------------- C3IM + CCAM
    def _consensus_confidences(
        self, visual_logits: torch.Tensor, audio_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float32 `softmax(visual)^beta` `(N, Nv)`, `softmax(audio scores)^alpha` `(N, Na)` and the similarity
        matrix: float32 whatever the model's dtype, so half precision does not tie or reorder the pairs."""
        audio_scores = audio_logits.detach().float()
        if self.config.audio_score_activation == "sigmoid":
            audio_scores = audio_scores.sigmoid()
        audio_confidence = audio_scores.softmax(dim=-1) ** self.config.consensus_audio_exponent
        visual_confidence = (
            visual_logits.detach().float().softmax(dim=-1) ** self.config.consensus_visual_exponent
        )
        return visual_confidence, audio_confidence, self.label_similarity.float()

    def cognitive_consensus(
        self, visual_logits: torch.Tensor, audio_logits: torch.Tensor | None
    ) -> torch.Tensor:
        """Unified visual class per row: argmax over (visual, audio) pairs of
        `softmax(audio)^alpha * similarity * softmax(visual)^beta` (first maximum in row-major
        order); the visual argmax when `consensus_mode="visual_only"`. Shapes `(N, Nv)`, `(N, Na)` -> `(N,)`."""
        if self.config.consensus_mode == "visual_only":
            return visual_logits.detach().float().argmax(dim=-1)
        visual_confidence, audio_confidence, similarity = self._consensus_confidences(
            visual_logits, audio_logits
        )
        weighted = audio_confidence[:, None, :] * similarity[None] * visual_confidence[:, :, None]
        return weighted.flatten(1).argmax(dim=-1) // weighted.shape[-1]

    def consensus_top_classes(
        self, visual_logits: torch.Tensor, audio_logits: torch.Tensor, k: int = CONSENSUS_TOP_CLASSES
    ) -> C3NConsensusTopClasses:
        """The `k` most confident visual and audio classes per row and the consensus score of each of
        their pairs (paper Fig. 6). `(N, Nv)`, `(N, Na)` -> classes and confidences `(N, k)`, pair
        scores `(N, k, k)` (rows: visual, columns: audio)."""
        visual_confidence, audio_confidence, similarity = self._consensus_confidences(
            visual_logits, audio_logits
        )
        visual_top, visual_classes = visual_confidence.topk(min(k, visual_confidence.shape[-1]), dim=-1)
        audio_top, audio_classes = audio_confidence.topk(min(k, audio_confidence.shape[-1]), dim=-1)
        pair_similarity = similarity[visual_classes[:, :, None], audio_classes[:, None, :]]
        return C3NConsensusTopClasses(
            visual_classes=visual_classes,
            visual_confidences=visual_top,
            audio_classes=audio_classes,
            audio_confidences=audio_top,
            pair_scores=visual_top[:, :, None] * pair_similarity * audio_top[:, None, :],
        )

    def _class_activated_weights(
        self,
        visual_logits: torch.Tensor,
        unified_labels: torch.Tensor,
        probes: list[torch.Tensor],
        stage_features: list[torch.Tensor],
        keep_graph: bool,
    ) -> list[torch.Tensor]:
        """Grad-CAM channel weights per stage: the gradient of each row's unified-label logit with
        respect to the stage's last block output, averaged over its tokens, `(N, C_k)` in float32.
        One backward to the probes only: no parameter receives a gradient."""
        if torch.compiler.is_exporting():
            raise RuntimeError(EXPORT_HINT)
        seed = F.one_hot(unified_labels, visual_logits.shape[-1]).to(visual_logits.dtype)
        gradients = torch.autograd.grad(visual_logits, probes, grad_outputs=seed, retain_graph=keep_graph)
        # A probe's gradient is the sum over the stage's h_k * w_k tokens.
        return [
            gradient[:, 0].float() / features[0, 0].numel()
            for gradient, features in zip(gradients, stage_features)
        ]

    def _channel_spatial_attention(
        self, stage_features: list[torch.Tensor], weights: list[torch.Tensor], batch: int, frames: int
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """CCAM: re-weight each stage `(N, C, h, w)` by `sigmoid(channel weights)`, then by its spatial
        attention `sigmoid(channel mean)`. Returns the refined maps and the spatial maps `(B, T, h, w)`."""
        refined, spatial_maps = [], []
        for features, stage_weights in zip(stage_features, weights):
            if self.config.ccam_weight_normalization == "l2":
                stage_weights = F.normalize(stage_weights, p=2, dim=1, eps=CCAM_NORM_EPS)
            features = features * torch.sigmoid(stage_weights).to(features.dtype)[:, :, None, None]
            spatial, flat_spatial = with_leading_dims(torch.sigmoid(features.mean(dim=1)), (batch, frames))
            spatial_maps.append(spatial)
            refined.append(features * flat_spatial[:, None])
        return refined, spatial_maps

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_features: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        audio_logits: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        labeled_frames: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        ccam_weights: tuple[torch.Tensor, ...] | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> C3NSegmentationOutput | tuple:
        r"""
        Audio comes either raw, through the model's audio encoder (`input_features` or
        `input_values`, needs `config.audio_config`), or precomputed (`audio_embeds` and
        `audio_logits`), never both.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_frames, 3, height, width)`):
                Normalised frames, any floating dtype (cast to the model's).
            input_features (`torch.FloatTensor` of shape `(batch_size, num_frames, 1, 96, 64)`, *optional*):
                VGGish log-mel examples, one per frame, for a VGGish audio encoder.
            input_values (`torch.FloatTensor` of shape `(batch_size, num_frames, num_samples)`, *optional*):
                One-second 16 kHz waveforms, one per frame, for a PANNs or BEATs audio encoder.
            audio_embeds (`torch.FloatTensor` of shape `(batch_size, num_frames, audio_embed_dim)`):
                One audio embedding per frame (e.g. VGGish). Not needed when `use_audio_features=False`.
            audio_logits (`torch.FloatTensor` of shape `(batch_size, num_frames, num_audio_classes)`):
                AudioSet logits of the audio classifier per frame. Only needed by the audio-visual consensus.
            labels (`torch.Tensor` of shape `(batch_size, num_frames, height, width)`, *optional*):
                Binary ground-truth masks with values 0/1 (or bool); gives `loss` (BCE + Dice).
            labeled_frames (`torch.BoolTensor` of shape `(batch_size, num_frames)`, *optional*):
                Frames that carry a label (all by default; the first frame only in S4 training).
            frame_mask (`torch.Tensor` of shape `(batch_size, num_frames)`, *optional*):
                1 for real frames, 0 for padding (e.g. the last clip of a video): padded frames are
                left out of the non-local fusion's keys and values and of the loss.
            ccam_weights (`tuple(torch.FloatTensor)`, *optional*):
                Precomputed CCAM channel weights, one `(batch_size, num_frames, C_k)` per stage (the
                `ccam_weights` output of an earlier forward on the same frames). Given, the model takes
                no gradient inside forward: the form of the model that `torch.export` and ONNX capture.
                The consensus still runs and gives `unified_labels`.
            output_hidden_states (`bool`, *optional*):
                Return the backbone stage maps and the decoder maps (`config.output_hidden_states` by default).
            output_attentions (`bool`, *optional*):
                Return CCAM's spatial attention maps and the consensus's top classes
                (`config.output_attentions` by default).
            return_dict (`bool`, *optional*):
                Return a [`C3NSegmentationOutput`] (default) or a plain tuple.
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        pixel_values = check_pixel_values(pixel_values, self.dtype)
        batch, frames, _, height, width = pixel_values.shape
        raw_audio = {
            name: value
            for name, value in (("input_features", input_features), ("input_values", input_values))
            if value is not None
        }
        if raw_audio:
            precomputed = [
                name
                for name, value in (("audio_embeds", audio_embeds), ("audio_logits", audio_logits))
                if value is not None
            ]
            if len(raw_audio) > 1 or precomputed:
                raise ValueError(
                    f"pass raw audio (`input_features` or `input_values`) or precomputed `audio_embeds` and "
                    f"`audio_logits`, not {sorted(raw_audio) + precomputed}"
                )
            ((input_name, audio_inputs),) = raw_audio.items()
            audio_embeds, audio_logits = self.encode_audio(audio_inputs, input_name, batch, frames)
        self._check_inputs(pixel_values, audio_embeds, audio_logits, labels, labeled_frames, frame_mask)
        consensus = config.consensus_mode != "none"
        if ccam_weights is not None:
            if not consensus:
                raise ValueError(
                    "`ccam_weights` were given, but this config has no CCAM (consensus_mode='none')"
                )
            self._check_ccam_weights(ccam_weights, batch, frames)
        take_gradient = consensus and ccam_weights is None
        keep_graph = torch.is_grad_enabled()
        if take_gradient and keep_graph and self.gradient_checkpointing and self.training:
            self._check_gradient_checkpointing()
        if take_gradient and not torch.compiler.is_compiling() and torch.is_inference_mode_enabled():
            raise RuntimeError(
                "C3N computes its CCAM weights with a gradient inside forward, which torch.inference_mode() "
                "forbids: run it under torch.no_grad() instead"
            )
        if frame_mask is not None:
            frame_mask = frame_mask.bool()
            labeled_frames = frame_mask if labeled_frames is None else labeled_frames.bool() & frame_mask

        # Backbone, visual head, consensus. CCAM needs gradients even under torch.no_grad(); the graph
        # is kept only when the caller records one.
        frame_pixels = pixel_values.flatten(0, 1)
        probes = self._gradient_probes(frame_pixels) if take_gradient else None
        with torch.enable_grad() if take_gradient else nullcontext():
            stage_features = self._run_backbone(frame_pixels, probes, keep_graph)
            visual_logits = self.visual_classifier(stage_features[-1].mean(dim=(2, 3)))
            flat_audio_logits = audio_logits.flatten(0, 1) if audio_logits is not None else None
            unified_labels = self.cognitive_consensus(visual_logits, flat_audio_logits) if consensus else None
            if take_gradient:
                raw_weights = self._class_activated_weights(
                    visual_logits, unified_labels, probes, stage_features, keep_graph
                )
        if not keep_graph:
            stage_features = [features.detach() for features in stage_features]
        hidden_states = None
        if output_hidden_states:
            clips = [with_leading_dims(features, (batch, frames)) for features in stage_features]
            hidden_states = tuple(clip for clip, _ in clips)
            stage_features = [flat for _, flat in clips]
        spatial_maps = None
        if consensus:
            if ccam_weights is not None:
                raw_weights = [weights.flatten(0, 1).float() for weights in ccam_weights]
            stage_features, spatial_maps = self._channel_spatial_attention(
                stage_features, raw_weights, batch, frames
            )

        logits, decoder_hidden_states = self._decode(
            stage_features,
            audio_embeds.to(self.dtype) if config.use_audio_features else None,
            frame_mask,
            batch,
            frames,
            output_hidden_states,
        )
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        logits = logits.view(batch, frames, 1, height, width)
        loss = self.segmentation_loss(logits, labels, labeled_frames) if labels is not None else None

        top = None
        if output_attentions and config.consensus_mode == "audio_visual":
            top = self.consensus_top_classes(visual_logits, flat_audio_logits)
            top = {name: value.view(batch, frames, *value.shape[1:]) for name, value in top.items()}
        output = C3NSegmentationOutput(
            loss=loss,
            logits=logits,
            unified_labels=unified_labels.view(batch, frames) if unified_labels is not None else None,
            visual_logits=visual_logits.detach().view(batch, frames, -1),
            ccam_weights=tuple(w.view(batch, frames, -1) for w in raw_weights) if consensus else None,
            hidden_states=hidden_states,
            decoder_hidden_states=decoder_hidden_states,
            attentions=tuple(spatial_maps) if output_attentions and spatial_maps is not None else None,
            consensus_top_visual_classes=top["visual_classes"] if top else None,
            consensus_top_visual_confidences=top["visual_confidences"] if top else None,
            consensus_top_audio_classes=top["audio_classes"] if top else None,
            consensus_top_audio_confidences=top["audio_confidences"] if top else None,
            consensus_top_pair_scores=top["pair_scores"] if top else None,
        )
        return output if return_dict else output.to_tuple()

    def _decode(
        self, stage_features, audio_embeds, frame_mask, batch: int, frames: int, output_hidden_states: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """ASPP and audio-visual fusion per stage, the top-down decoder and the head: `(N, 1, H/2, W/2)`
        mask logits (stride 2) and, when asked, the decoder maps."""
        fused = []
        for features, aspp, fusion in zip(stage_features, self.aspp, self.fusion):
            features = aspp(features)
            clip = features.view(batch, frames, *features.shape[1:])
            fused.append(fusion(clip, audio_embeds, frame_mask).reshape(features.shape))
        decoder_hidden_states = [] if output_hidden_states else None
        decoded = None
        for stage in reversed(range(4)):
            target = fused[stage - 1].shape[-2:] if stage > 0 else tuple(2 * s for s in fused[0].shape[-2:])
            if decoded is None:
                decoded = self.decoder[stage](fused[stage], None, target)
            else:
                decoded = self.decoder[stage](decoded, fused[stage], target)
            if decoder_hidden_states is not None:
                clip, decoded = with_leading_dims(decoded, (batch, frames))
                decoder_hidden_states.append(clip)
        return self.head(decoded), tuple(decoder_hidden_states) if decoder_hidden_states is not None else None

    @staticmethod
    def segmentation_loss(
        logits: torch.Tensor, labels: torch.Tensor, labeled_frames: torch.Tensor | None = None
    ) -> torch.Tensor:
        """BCE (mean over pixels) + Dice (smoothing 1, mean over frames) on the labelled frames, in float32.

        logits `(B, T, 1, H, W)`, labels `(B, T, H, W)` with values 0/1, labeled_frames `(B, T)` bool.
        """
        logits = logits.squeeze(2).float()
        labels = labels.float()
        if labeled_frames is not None:
            logits, labels = logits[labeled_frames.bool()], labels[labeled_frames.bool()]
        else:
            logits, labels = logits.flatten(0, 1), labels.flatten(0, 1)
        bce = F.binary_cross_entropy_with_logits(logits, labels)
        probabilities = torch.sigmoid(logits).flatten(1)
        targets = labels.flatten(1)
        dice = 2 * ((probabilities * targets).sum(1) + 1) / (probabilities.sum(1) + targets.sum(1) + 1)
        return bce + (1 - dice.mean())


__all__ = ["C3NForAudioVisualSegmentation", "C3NPreTrainedModel", "C3NSegmentationOutput"]
