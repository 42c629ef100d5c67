"""TPAVI (the AVSBench baseline) model configuration."""

from __future__ import annotations

import copy

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from ..auto import sub_config_from_dict
from ..backbones import PVT_V2_B5_KWARGS, check_four_stage_backbone
from ..hub_code import HubConfigMixin


class TPAVIConfig(HubConfigMixin, PreTrainedConfig):
    r"""Configuration of a [`TPAVIForAudioVisualSegmentation`].

    TPAVI is the baseline of AVSBench (Zhou et al., "Audio-Visual Segmentation", ECCV 2022, and
    its AVSS extension): a visual backbone, one "ASPP" per stage, the temporal pixel-wise
    audio-visual interaction (TPAVI) module on each stage, and a top-down fusion decoder.

    The defaults reproduce the official code (OpenNLPLab/AVSBench, `Pred_endecoder` with
    `--tpavi_stages 0 1 2 3 --tpavi_va_flag`) with the PVT-v2-b5 backbone that every official
    train script selects (`visual_backbone="pvt"`); the option marked *paper*
    switches to the behaviour the paper describes where the code differs (see the TPAVI docs page).

    Attributes:
        backbone_config (`dict` or `PreTrainedConfig`, *optional*):
            Any Transformers backbone config returning 4 feature maps (default: PVT-v2-b5;
            `avs_models.models.backbones.resnet50_backbone_config()` gives the official ResNet-50).
        audio_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the audio encoder (VGGish) that turns log-mel `input_features` into
            embeddings. `None` builds a model that takes `audio_embeds` only, as the official one.
        audio_embed_dim (`int`, defaults to 128):
            Width of one second's audio embedding (VGGish: 128).
        hidden_size (`int`, defaults to 256):
            Channels of every stage after its "ASPP", in TPAVI and in the decoder (`channel`).
        aspp_dilations (`list[int]`, defaults to `[3, 6, 12, 18]`):
            Dilations of the 3x3 convolutions whose outputs each stage's "ASPP" sums.
        tpavi_stages (`list[int]`, defaults to `[0, 1, 2, 3]`):
            Stages (0 = the highest resolution) with a TPAVI module, as the official
            `--tpavi_stages`. The other stages go to the decoder unchanged.
        tpavi_frames_per_group (`int` or `None`, defaults to 5):
            TPAVI attends over groups of this many consecutive frames. The official code always
            groups 5 frames, so a 10-frame AVSS clip is two independent groups; clip lengths must
            then be a multiple of it. `None` (*paper*) attends over each whole clip.
        tpavi_audio_bias (`bool`, defaults to `True`):
            Whether TPAVI's audio projection (`align_channel`) has a bias: it has one in the
            official S4 and MS3 code and none in the AVSS code.
        head_hidden_sizes (`list[int]`, defaults to `[128, 32]`):
            Widths of the two 3x3 convolutions of the output head.
        avm_loss_weight (`float`, defaults to 0.0):
            `lambda_1`, the weight of the audio-visual matching (AVM) loss added to the
            segmentation loss in training. The official scripts use 0.5 for MS3 and AVSS and no
            AVM loss for S4.
        avm_loss_stages (`list[int]`, defaults to `[0, 1, 2, 3]`):
            Stages whose post-TPAVI maps enter the AVM loss (`--masked_av_stages`); each must
            have a TPAVI module.
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of TPAVI's layer normalisation.
        freeze_audio_encoder (`bool`, defaults to `True`):
            Keep the audio encoder's weights fixed during training, as the official code.
    """

    model_type = "tpavi"
    sub_configs_defaults = {  # noqa: RUF012 (Transformers reads this class attribute)
        "backbone_config": SubConfigSpec(
            config_class=AutoConfig, model_type="pvt_v2", init_kwargs=copy.deepcopy(PVT_V2_B5_KWARGS)
        ),
    }

    backbone_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    audio_embed_dim: int = 128
    hidden_size: int = 256
    aspp_dilations: list[int] | tuple[int, ...] = (3, 6, 12, 18)
    tpavi_stages: list[int] | tuple[int, ...] = (0, 1, 2, 3)
    tpavi_frames_per_group: int | None = 5
    tpavi_audio_bias: bool = True
    head_hidden_sizes: list[int] | tuple[int, ...] = (128, 32)
    avm_loss_weight: float = 0.0
    avm_loss_stages: list[int] | tuple[int, ...] = (0, 1, 2, 3)
    layer_norm_eps: float = 1e-5
    freeze_audio_encoder: bool = True

    def __post_init__(self, **kwargs):
        if self.id2label is None:
            kwargs.setdefault("num_labels", 1)
        super().__post_init__(**kwargs)
        # The package's own audio encoders resolve without the package too (Hub code): models/auto.py.
        self.audio_config = sub_config_from_dict(self.audio_config)
        self.aspp_dilations = [int(rate) for rate in self.aspp_dilations]
        self.tpavi_stages = sorted({int(stage) for stage in self.tpavi_stages})
        self.avm_loss_stages = sorted({int(stage) for stage in self.avm_loss_stages})
        self.head_hidden_sizes = [int(size) for size in self.head_hidden_sizes]
        self.avm_loss_weight = float(self.avm_loss_weight)
        if not self.aspp_dilations or min(self.aspp_dilations) < 1:
            raise ValueError(f"aspp_dilations must hold positive dilations, got {self.aspp_dilations}")
        if not set(self.tpavi_stages) <= {0, 1, 2, 3}:
            raise ValueError(f"tpavi_stages must be stage numbers 0-3, got {self.tpavi_stages}")
        if self.tpavi_frames_per_group is not None and self.tpavi_frames_per_group < 1:
            raise ValueError(
                f"tpavi_frames_per_group must be a positive number of frames or None (whole clips), "
                f"got {self.tpavi_frames_per_group}"
            )
        if len(self.head_hidden_sizes) != 2 or min(self.head_hidden_sizes) < 1:
            raise ValueError(f"head_hidden_sizes must hold 2 positive widths, got {self.head_hidden_sizes}")
        if self.avm_loss_weight < 0:
            raise ValueError(f"avm_loss_weight must be >= 0, got {self.avm_loss_weight}")
        if self.avm_loss_weight > 0 and not set(self.avm_loss_stages) <= set(self.tpavi_stages):
            raise ValueError(
                f"avm_loss_stages {self.avm_loss_stages} must be stages with TPAVI (tpavi_stages "
                f"{self.tpavi_stages}): the AVM loss compares each stage's map with its TPAVI audio features"
            )
        if self.avm_loss_weight > 0 and not self.avm_loss_stages:
            raise ValueError("avm_loss_stages is empty although avm_loss_weight > 0")
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {self.num_labels}")
        check_four_stage_backbone("TPAVI", self.backbone_config)


__all__ = ["TPAVIConfig"]
