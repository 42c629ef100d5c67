"""PCMANet model configuration."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from ..auto import sub_config_from_dict
from ..backbones import ALL_STAGES, check_four_stage_backbone
from ..hub_code import HubConfigMixin

QSCA_TOKEN_LAYOUTS = ("official", "spatial")
# The paper's Table IV ablations; each is True in the full model.
ABLATION_SWITCHES = ("use_avga", "use_qsca", "qsca_query_selection", "qsca_audio_continuity", "cim_progression")


class PCMANetConfig(HubConfigMixin, PreTrainedConfig):
    r"""Configuration of a [`PCMANetForAudioVisualSegmentation`].

    PCMANet (Progressive Confident Masking Attention Network, Wang et al.) fuses four visual
    backbone stages with a per-second audio embedding through grouped audio-visual attention
    (AVGA), query-selected cross-attention (QSCA) on the tokens that the deeper stage is not yet
    confident about (CIM), and a guided-fusion (GF) decoder with one prediction per stage.

    The defaults reproduce the official code; the options marked *paper* switch to the behaviour
    the paper describes where the code differs (see the PCMANet docs page).

    Attributes:
        backbone_config (`dict` or `PreTrainedConfig`, *optional*):
            Any Transformers backbone config returning 4 feature maps (default: ResNet-50).
        audio_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the audio encoder (VGGish) that turns log-mel `input_features` into
            embeddings. `None` builds a model that takes `audio_embeds` only.
        audio_embed_dim (`int`, defaults to 128):
            Width of one second's audio embedding (VGGish: 128).
        hidden_size (`int`, defaults to 256):
            The unified channel width `C` of every stage.
        avga_groups (`int`, defaults to 8):
            Channel groups of the audio-visual grouped attention. The paper and every official model
            use 8, except the ResNet-50 S4 model, which uses 4 (converted checkpoints set it from
            their weights).
        qsca_pool_sizes (`list[int]`, defaults to `[28, 14, 7, 7]`):
            Side of the token grid each stage's QSCA pools its features to (stage 1 to 4), as the
            official code. A confidence mask of another size is resized (nearest) to the grid.
        qsca_num_heads (`int`, defaults to 8):
            Attention heads of QSCA.
        qsca_head_dim (`int`, defaults to 32):
            Width of each QSCA attention head.
        qsca_token_layout (`str`, defaults to `"official"`):
            How QSCA's output tokens `[N, C]` become a feature map. `"official"` reinterprets the
            token memory as `[C, h, w]` without a transpose, as the official code does;
            `"spatial"` (*paper*) puts token `n` back at its pixel.
        qsca_detach_selected_tokens (`bool`, defaults to `True`):
            The official code scatters the selected tokens' attention output back under
            `torch.no_grad()`, so no gradient reaches QSCA's visual branch through them. `False`
            (*paper*) lets the gradient flow.
        confidence_threshold (`float`, defaults to 0.99):
            CIM threshold `c`: a pixel whose probability lies in `(1 - c, c)` is unconfident
            and its token is kept for QSCA. Multi-class models use the softmax maximum.
        loss_stage_weights (`list[float]`, defaults to `[1, 1, 1, 1]`):
            Weight of each stage's loss, final (stage 1) prediction first.
        freeze_audio_encoder (`bool`, defaults to `True`):
            Keep the audio encoder's weights fixed during training, as both papers do.
        ignore_index (`int`, defaults to 255):
            Class id of pixels that the multi-class loss skips (AVSBench's "ignore" value). It must lie
            outside `[0, num_labels)`. Unused when `num_labels == 1`.
        use_avga (`bool`, defaults to `True`):
            *Ablation* (paper Table IV, "GA"). `False` replaces each stage's AVGA by adding the audio
            vector to every pixel of the visual map, the "directly combined" baseline of the paper.
        use_qsca (`bool`, defaults to `True`):
            *Ablation* (paper Table IV, "CA"). `False` removes QSCA: the guided fusion receives no
            guide map, and the confidence masks are still computed but select nothing.
        qsca_query_selection (`bool`, defaults to `True`):
            *Ablation* (paper Table IV, "CA w/o M"). `False` makes every token a query in every
            QSCA, whatever the confidence masks say.
        qsca_audio_continuity (`bool`, defaults to `True`):
            *Ablation* (paper Table IV, "CA w/o C"). `False` gives every QSCA the initial (projected)
            audio embedding instead of the audio state updated by the deeper QSCA.
        cim_progression (`bool`, defaults to `True`):
            *Ablation* (paper Table IV, "CI w/o P"). `False` makes each stage's confidence mask from
            its own prediction only, instead of multiplying it with the deeper stage's mask.
    """

    model_type = "pcmanet"
    sub_configs_defaults = {  # noqa: RUF012 (Transformers reads this class attribute)
        "backbone_config": SubConfigSpec(
            config_class=AutoConfig, model_type="resnet", init_kwargs={"out_features": ALL_STAGES}
        ),
    }

    backbone_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    audio_embed_dim: int = 128
    hidden_size: int = 256
    avga_groups: int = 8
    qsca_pool_sizes: list[int] | tuple[int, ...] = (28, 14, 7, 7)
    qsca_num_heads: int = 8
    qsca_head_dim: int = 32
    qsca_token_layout: str = "official"
    qsca_detach_selected_tokens: bool = True
    confidence_threshold: float = 0.99
    loss_stage_weights: list[float] | tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    freeze_audio_encoder: bool = True
    ignore_index: int = 255
    use_avga: bool = True
    use_qsca: bool = True
    qsca_query_selection: bool = True
    qsca_audio_continuity: bool = True
    cim_progression: bool = True
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.id2label is None:
            kwargs.setdefault("num_labels", 1)
        # Checked before PreTrainedConfig turns num_labels into an id2label map, which makes any
        # negative count an empty map (num_labels 0).
        if kwargs.get("num_labels") is not None and kwargs["num_labels"] < 1:
            raise ValueError(f"num_labels must be at least 1, got {kwargs['num_labels']}")
        super().__post_init__(**kwargs)
        # Not a declared sub-config: resolved through the package's own lookup, which the Hub copy
        # of this file carries (see hub_code.py), so it works where avs_models is not installed.
        self.audio_config = sub_config_from_dict(self.audio_config)
        self.qsca_pool_sizes = list(self.qsca_pool_sizes)
        self.loss_stage_weights = [float(weight) for weight in self.loss_stage_weights]
        if self.hidden_size % self.avga_groups:
            raise ValueError(f"avga_groups={self.avga_groups} must divide hidden_size={self.hidden_size}")
        if len(self.qsca_pool_sizes) != 4 or min(self.qsca_pool_sizes) < 1:
            raise ValueError(f"qsca_pool_sizes must hold 4 positive sizes, got {self.qsca_pool_sizes}")
        if len(self.loss_stage_weights) != 4:
            raise ValueError(f"loss_stage_weights must hold 4 weights, got {self.loss_stage_weights}")
        if self.qsca_token_layout not in QSCA_TOKEN_LAYOUTS:
            raise ValueError(
                f"qsca_token_layout must be one of {QSCA_TOKEN_LAYOUTS}, got {self.qsca_token_layout!r}"
            )
        if not 0.5 < self.confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must lie in (0.5, 1], got {self.confidence_threshold}")
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {self.num_labels}")
        if self.num_labels > 1 and 0 <= self.ignore_index < self.num_labels:
            raise ValueError(
                f"ignore_index={self.ignore_index} is a class id of this {self.num_labels}-class model: "
                "choose a value outside [0, num_labels), e.g. 255"
            )
        for switch in ABLATION_SWITCHES:
            if not isinstance(getattr(self, switch), bool):
                raise ValueError(f"{switch} must be true or false, got {getattr(self, switch)!r}")
        check_four_stage_backbone("PCMANet", self.backbone_config)


__all__ = ["PCMANetConfig"]
