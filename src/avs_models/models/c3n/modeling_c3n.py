"""C3N: Cross-modal Cognitive Consensus guided Network for audio-visual segmentation.

Pipeline per frame: a Transformers vision backbone (PVT-v2 or Swin) gives 4 stage feature maps
and, through its ImageNet head, visual class logits. C3IM combines the visual and audio class
confidences with a label-name similarity matrix into one unified visual class per frame. CCAM
takes the gradient of that class's logit with respect to the last block of every backbone stage
(one `torch.autograd.grad` call), averages it over space into channel weights and re-weights the
stage features (channel then spatial attention). ASPP, an audio-visual non-local block per stage,
a top-down fusion decoder and a small convolutional head give one mask logit map per frame.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForAudioClassification, PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import load_backbone
from transformers.utils import ModelOutput

from ..audio_utils import encode_audio_segments
from ..label_names import AUDIOSET_CLASSES, IMAGENET_1K_CLASSES
from .configuration_c3n import C3NConfig
from .label_similarity import compute_label_similarity


@dataclass
class C3NSegmentationOutput(ModelOutput):
    """
    Output of [`C3NForAudioVisualSegmentation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            BCE + Dice loss over the labelled frames, when `labels` were given.
        logits (`torch.FloatTensor` of shape `(batch_size, num_frames, 1, height, width)`):
            Mask logits at the input resolution.
        unified_labels (`torch.LongTensor` of shape `(batch_size, num_frames)`, *optional*):
            Visual class chosen per frame by the cognitive consensus (`None` when
            `consensus_mode="none"`).
        visual_logits (`torch.FloatTensor` of shape `(batch_size, num_frames, num_visual_classes)`):
            Logits of the visual classification head.
        ccam_weights (`tuple(torch.FloatTensor)`, *optional*):
            Per stage, the class-activated channel weights (spatially averaged gradients, before
            normalisation), each of shape `(batch_size, num_frames, stage_channels)`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    unified_labels: torch.LongTensor | None = None
    visual_logits: torch.FloatTensor | None = None
    ccam_weights: tuple[torch.FloatTensor, ...] | None = None


def _named_labels(config) -> list[str] | None:
    """`id2label` names in id order, or None when they are Transformers' placeholders (`LABEL_0`, ...)."""
    names = [config.id2label[index] for index in range(config.num_labels)]
    return None if all(name == f"LABEL_{index}" for index, name in enumerate(names)) else names


def _stage_last_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The last Transformer block of each of the 4 stages of a PVT-v2 or Swin backbone."""
    model_type = backbone.config.model_type
    if model_type == "pvt_v2":
        stages = backbone.encoder.layers
    elif model_type == "swin":
        stages = backbone.swin.encoder.layers
    else:
        raise ValueError(f"C3N supports pvt_v2 and swin backbones, got backbone model_type {model_type!r}")
    return [stage.blocks[-1] for stage in stages]


class C3NASPP(nn.Module):
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
        pooled = self.image_pool_conv(features.mean(dim=(2, 3), keepdim=True))
        branches = [pooled.expand(-1, -1, *features.shape[2:]), self.pointwise_conv(features)]
        branches += [conv(features) for conv in self.atrous_convs]
        return self.projection(torch.cat(branches, dim=1))


class C3NAudioVisualNonLocal(nn.Module):
    """Cross-modal non-local block (TPAVI) on one stage, over all frames of a clip jointly.

    Queries come from the visual tokens, keys from the projected audio (repeated over space in the
    official code) and values from the visual tokens; the attention is a dot product divided by the
    number of positions. Because the attention has no softmax, `(Q K^T) V / N` is computed as
    `Q (K^T V) / N`, and audio keys that repeat over space are summed per frame first: the same
    result without the `(THW)^2` matrix. Padded frames (`frame_mask` 0) give no keys or values
    and are not counted in N.
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
        frame_mask: `(B, T)`, 1 for real frames, or `None` (all real)."""
        batch, frames, channels, height, width = features.shape
        tokens = features.permute(0, 1, 3, 4, 2).reshape(batch, frames * height * width, channels)
        queries = self.query(tokens)
        values = self.value(tokens)
        if frame_mask is None:
            num_positions = tokens.shape[1]
        else:
            real = frame_mask.to(values.dtype)
            values = values * real.repeat_interleave(height * width, dim=1)[:, :, None]
            num_positions = (real.sum(dim=1) * height * width).clamp(min=1)[:, None, None]
        if audio is None:
            context = self.key(tokens).transpose(1, 2) @ values
        else:
            audio_keys = self.key(self.audio_projection(audio))  # (B, T, inner)
            values_per_frame = values.view(batch, frames, height * width, -1).sum(dim=2)
            context = audio_keys.transpose(1, 2) @ values_per_frame
        attended = queries @ (context / num_positions)
        fused = self.output_norm(self.output(attended).reshape(-1, channels)).view_as(tokens) + tokens
        fused = self.layer_norm(fused)
        return fused.view(batch, frames, height, width, channels).permute(0, 1, 4, 2, 3)


class C3NResidualConvUnit(nn.Module):
    """Two 3x3 convolutions with pre-activation; the skip carries the rectified input, as the
    official unit's in-place ReLU does."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        rectified = F.relu(features)
        return self.conv2(F.relu(self.conv1(rectified))) + rectified


class C3NFusionBlock(nn.Module):
    """Top-down decoder step: add the refined skip feature, refine, upsample (bilinear, corners aligned)."""

    def __init__(self, channels: int, has_skip: bool):
        super().__init__()
        self.skip_unit = C3NResidualConvUnit(channels) if has_skip else None
        self.output_unit = C3NResidualConvUnit(channels)

    def forward(
        self, features: torch.Tensor, skip: torch.Tensor | None, output_size: tuple[int, int]
    ) -> torch.Tensor:
        if self.skip_unit is not None:
            features = features + self.skip_unit(skip)
        features = self.output_unit(features)
        return F.interpolate(features, size=output_size, mode="bilinear", align_corners=True)


class C3NPreTrainedModel(PreTrainedModel):
    config_class = C3NConfig
    base_model_prefix = "c3n"
    main_input_name = "pixel_values"
    input_modalities = ("image", "audio")

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


class C3NForAudioVisualSegmentation(C3NPreTrainedModel):
    """C3N for audio-visual segmentation (S4 / MS3: one sounding-object mask per frame).

    The visual class vs audio class similarity matrix is the buffer `label_similarity`
    `(num_visual_classes, num_audio_classes)`, saved with the model. Fill it once with
    [`~C3NForAudioVisualSegmentation.set_label_similarity`] (a precomputed matrix, e.g. from
    `load_official_similarity_matrix`) or
    [`~C3NForAudioVisualSegmentation.compute_label_similarity_from_names`].
    """

    def __init__(self, config: C3NConfig):
        super().__init__(config)
        self.backbone = load_backbone(config)
        self.audio_encoder = (
            AutoModelForAudioClassification.from_config(config.audio_config) if config.audio_config else None
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
        self.decoder = nn.ModuleList(C3NFusionBlock(channels, has_skip=i < 3) for i in range(4))
        first, second = config.head_hidden_sizes
        self.head = nn.ModuleDict(
            {
                "conv1": nn.Conv2d(channels, first, 3, padding=1),
                "conv2": nn.Conv2d(first, second, 3, padding=1),
                "classifier": nn.Conv2d(second, 1, 1),
            }
        )
        self.register_buffer(
            "label_similarity",
            torch.zeros(config.num_visual_classes, config.num_audio_classes),
            persistent=True,
        )
        self._stage_blocks = _stage_last_blocks(self.backbone)
        self.post_init()
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        # Freezing lives here, not only in __init__: from_pretrained replaces every parameter with
        # a fresh one that requires grad, then calls eval(). A frozen audio encoder also keeps its
        # inference behaviour (dropout, batch norm) while the rest trains.
        if self.config.freeze_visual_classifier:
            self.visual_classifier.requires_grad_(False)
        if self.audio_encoder is not None and self.config.freeze_audio_encoder:
            self.audio_encoder.eval().requires_grad_(False)
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
    @staticmethod
    def _check_pixel_values(pixel_values) -> None:
        if (
            not isinstance(pixel_values, torch.Tensor)
            or pixel_values.dim() != 5
            or pixel_values.shape[2] != 3
        ):
            shape = (
                tuple(pixel_values.shape)
                if isinstance(pixel_values, torch.Tensor)
                else type(pixel_values).__name__
            )
            raise ValueError(f"pixel_values must have shape (batch, frames, 3, height, width), got {shape}")
        if not pixel_values.is_floating_point():
            raise TypeError(f"pixel_values must be a floating point tensor, got {pixel_values.dtype}")

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
                        f"{name} of shape ({batch}, {frames}, {width}) is required by this config"
                    )
                continue
            if tensor.dim() != 3 or tuple(tensor.shape) != (batch, frames, width):
                raise ValueError(
                    f"{name} must have shape (batch, frames, {width}) = ({batch}, {frames}, {width}) to match "
                    f"pixel_values, got {tuple(tensor.shape)}"
                )
            if not tensor.is_floating_point():
                raise TypeError(f"{name} must be a floating point tensor, got {tensor.dtype}")
        if labels is not None and tuple(labels.shape) != (batch, frames, *pixel_values.shape[3:]):
            raise ValueError(
                f"labels must have shape (batch, frames, height, width) = "
                f"{(batch, frames, *pixel_values.shape[3:])}, got {tuple(labels.shape)}"
            )
        for name, mask in (("labeled_frames", labeled_frames), ("frame_mask", frame_mask)):
            if mask is not None and tuple(mask.shape) != (batch, frames):
                raise ValueError(
                    f"{name} must have shape (batch, frames) = ({batch}, {frames}), got {tuple(mask.shape)}"
                )

    # ----------------------------------------------------------------- audio
    def encode_audio(
        self, audio_inputs: torch.Tensor, input_name: str, batch: int, frames: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the audio classifier on one audio input per frame.

        Args:
            audio_inputs: `(batch, frames, ...)`: VGGish log-mel examples `(B, T, 1, 96, 64)` as
                `input_features`, or one-second waveforms `(B, T, samples)` as `input_values`
                (PANNs, BEATs), or whatever the encoder's own feature extractor gives per segment.
            input_name: `"input_features"` or `"input_values"`.

        Returns:
            `audio_embeds` `(B, T, audio_embed_dim)` and `audio_logits` `(B, T, num_audio_classes)`.
        """
        if self.audio_encoder is None:
            raise ValueError(
                f"this C3N has no audio encoder (config.audio_config is None): pass `audio_embeds` "
                f"({batch}, {frames}, {self.config.audio_embed_dim}) and `audio_logits` "
                f"({batch}, {frames}, {self.config.num_audio_classes}) instead of `{input_name}`"
            )
        if not isinstance(audio_inputs, torch.Tensor) or tuple(audio_inputs.shape[:2]) != (batch, frames):
            shape = (
                tuple(audio_inputs.shape)
                if isinstance(audio_inputs, torch.Tensor)
                else type(audio_inputs).__name__
            )
            raise ValueError(
                f"{input_name} must start with (batch, frames) = ({batch}, {frames}) to match pixel_values, got {shape}"
            )
        expected = self.audio_encoder.main_input_name
        if input_name != expected:
            raise ValueError(
                f"the audio encoder ({self.config.audio_config.model_type}) takes `{expected}`, not `{input_name}`"
            )
        trainable = torch.is_grad_enabled() and not self.config.freeze_audio_encoder
        with torch.set_grad_enabled(trainable):
            return encode_audio_segments(self.audio_encoder, input_name, audio_inputs)

    # ----------------------------------------------------------------- C3IM + CCAM
    def cognitive_consensus(
        self, visual_logits: torch.Tensor, audio_logits: torch.Tensor | None
    ) -> torch.Tensor:
        """Unified visual class per row: argmax over (visual, audio) pairs of
        `softmax(audio)^alpha * similarity * softmax(visual)^beta` (first maximum in row-major
        order); the visual argmax when `consensus_mode="visual_only"`. Shapes `(N, Nv)`, `(N, Na)` -> `(N,)`."""
        visual_logits = visual_logits.detach()
        if self.config.consensus_mode == "visual_only":
            return visual_logits.argmax(dim=-1)
        audio_scores = audio_logits.detach()
        if self.config.audio_score_activation == "sigmoid":
            audio_scores = audio_scores.sigmoid()
        audio_confidence = audio_scores.softmax(dim=-1) ** self.config.consensus_audio_exponent
        visual_confidence = visual_logits.softmax(dim=-1) ** self.config.consensus_visual_exponent
        weighted = audio_confidence[:, None, :] * self.label_similarity[None] * visual_confidence[:, :, None]
        return weighted.flatten(1).argmax(dim=-1) // weighted.shape[-1]

    def _ccam(self, stage_features, activations, visual_logits, unified_labels, keep_graph):
        """Class-activated channel weights of every stage and the re-weighted stage features."""
        chosen_logits = visual_logits.gather(1, unified_labels[:, None]).sum()
        gradients = torch.autograd.grad(chosen_logits, activations, retain_graph=keep_graph)
        raw_weights = [gradient.mean(dim=1) for gradient in gradients]  # (N, L, C) -> (N, C)
        refined = []
        for features, weights in zip(stage_features, raw_weights):
            if self.config.ccam_weight_normalization == "l2":
                weights = F.normalize(weights, p=2, dim=1)
            features = features * torch.sigmoid(weights)[:, :, None, None]
            refined.append(features * torch.sigmoid(features.mean(dim=1, keepdim=True)))
        return refined, raw_weights

    def _encode_visual(self, pixel_values, audio_logits, compute_ccam: bool, keep_graph: bool):
        """Backbone, visual head, consensus and (when asked) CCAM on `(N, 3, H, W)` frames."""
        activations: list[torch.Tensor] = []

        def capture(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if torch.is_grad_enabled() and not hidden.requires_grad:
                # frozen backbone: make the block output a leaf so gradients can still reach it
                hidden = hidden.detach().requires_grad_(True)
                output = (hidden, *output[1:]) if isinstance(output, tuple) else hidden
            activations.append(hidden)
            return output

        handles = (
            [block.register_forward_hook(capture) for block in self._stage_blocks] if compute_ccam else []
        )
        try:
            stage_features = list(self.backbone(pixel_values).feature_maps)
        finally:
            for handle in handles:
                handle.remove()
        visual_logits = self.visual_classifier(stage_features[-1].mean(dim=(2, 3)))
        if self.config.consensus_mode == "none":
            return stage_features, visual_logits, None, None
        unified_labels = self.cognitive_consensus(visual_logits, audio_logits)
        if not compute_ccam:
            return stage_features, visual_logits, unified_labels, None
        refined, raw_weights = self._ccam(
            stage_features, activations, visual_logits, unified_labels, keep_graph
        )
        return refined, visual_logits, unified_labels, raw_weights

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
        return_dict: bool | None = None,
    ) -> C3NSegmentationOutput | tuple:
        r"""
        Audio comes either raw, through the model's audio encoder (`input_features` or
        `input_values`, needs `config.audio_config`), or precomputed (`audio_embeds` and
        `audio_logits`), never both.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_frames, 3, height, width)`):
                Normalised frames.
            input_features (`torch.FloatTensor` of shape `(batch_size, num_frames, 1, 96, 64)`, *optional*):
                VGGish log-mel examples, one per frame, for a VGGish audio encoder.
            input_values (`torch.FloatTensor` of shape `(batch_size, num_frames, num_samples)`, *optional*):
                One-second 16 kHz waveforms, one per frame, for a PANNs or BEATs audio encoder.
            audio_embeds (`torch.FloatTensor` of shape `(batch_size, num_frames, audio_embed_dim)`):
                One audio embedding per frame (e.g. VGGish). Not needed when `use_audio_features=False`.
            audio_logits (`torch.FloatTensor` of shape `(batch_size, num_frames, num_audio_classes)`):
                AudioSet logits of the audio classifier per frame. Only needed by the audio-visual consensus.
            labels (`torch.FloatTensor` of shape `(batch_size, num_frames, height, width)`, *optional*):
                Binary ground-truth masks; gives `loss` (BCE + Dice).
            labeled_frames (`torch.BoolTensor` of shape `(batch_size, num_frames)`, *optional*):
                Frames that carry a label (all by default; the first frame only in S4 training).
            frame_mask (`torch.Tensor` of shape `(batch_size, num_frames)`, *optional*):
                1 for real frames, 0 for padding (e.g. the last clip of a video): padded frames are
                left out of the non-local fusion's keys and values and of the loss.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._check_pixel_values(pixel_values)
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
            audio_embeds, audio_logits = self.encode_audio(audio_inputs, input_name, *pixel_values.shape[:2])
        self._check_inputs(pixel_values, audio_embeds, audio_logits, labels, labeled_frames, frame_mask)
        batch, frames, _, height, width = pixel_values.shape
        if frame_mask is not None:
            frame_mask = frame_mask.bool()
            labeled_frames = frame_mask if labeled_frames is None else labeled_frames.bool() & frame_mask
        flat_audio_logits = audio_logits.reshape(batch * frames, -1) if audio_logits is not None else None
        compute_ccam = self.config.consensus_mode != "none"
        # CCAM needs gradients even under torch.no_grad(); the graph is kept only when the caller records one.
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad() if compute_ccam else nullcontext():
            stage_features, visual_logits, unified_labels, raw_weights = self._encode_visual(
                pixel_values.reshape(batch * frames, *pixel_values.shape[2:]),
                flat_audio_logits,
                compute_ccam,
                keep_graph,
            )
        if not keep_graph:
            stage_features = [features.detach() for features in stage_features]
        logits = self._decode(
            stage_features,
            audio_embeds if self.config.use_audio_features else None,
            frame_mask,
            batch,
            frames,
        )
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        logits = logits.view(batch, frames, 1, height, width)
        loss = self.segmentation_loss(logits, labels, labeled_frames) if labels is not None else None

        output = C3NSegmentationOutput(
            loss=loss,
            logits=logits,
            unified_labels=unified_labels.view(batch, frames) if unified_labels is not None else None,
            visual_logits=visual_logits.detach().view(batch, frames, -1),
            ccam_weights=tuple(w.view(batch, frames, -1) for w in raw_weights)
            if raw_weights is not None
            else None,
        )
        return output if return_dict else output.to_tuple()

    def _decode(self, stage_features, audio_embeds, frame_mask, batch: int, frames: int) -> torch.Tensor:
        fused = []
        for features, aspp, fusion in zip(stage_features, self.aspp, self.fusion):
            features = aspp(features)
            clip = features.view(batch, frames, *features.shape[1:])
            fused.append(fusion(clip, audio_embeds, frame_mask).reshape(features.shape))
        decoded = None
        for stage in reversed(range(4)):
            target = fused[stage - 1].shape[-2:] if stage > 0 else tuple(2 * s for s in fused[0].shape[-2:])
            if decoded is None:
                decoded = self.decoder[stage](fused[stage], None, target)
            else:
                decoded = self.decoder[stage](decoded, fused[stage], target)
        hidden = self.head["conv1"](decoded)
        hidden = F.interpolate(hidden, scale_factor=2, mode="bilinear", align_corners=False)
        hidden = F.relu(self.head["conv2"](hidden))
        return self.head["classifier"](hidden)

    @staticmethod
    def segmentation_loss(
        logits: torch.Tensor, labels: torch.Tensor, labeled_frames: torch.Tensor | None = None
    ) -> torch.Tensor:
        """BCE (mean over pixels) + Dice (smoothing 1, mean over frames) on the labelled frames.

        logits `(B, T, 1, H, W)`, labels `(B, T, H, W)`, labeled_frames `(B, T)` bool.
        """
        logits = logits.squeeze(2)
        labels = labels.to(logits.dtype)
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
