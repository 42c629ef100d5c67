"""AVSegFormer model configuration."""

from __future__ import annotations

import copy

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from ..auto import sub_config_from_dict
from ..backbones import PVT_V2_B5_KWARGS, check_four_stage_backbone
from ..hub_code import HubConfigMixin

MASK_LOSSES = ("dice", "bce")


class AVSegFormerConfig(HubConfigMixin, PreTrainedConfig):
    r"""Configuration of an [`AVSegFormerForAudioVisualSegmentation`].

    AVSegFormer (Gao et al., AAAI 2024) segments each frame on its own: a deformable-attention
    transformer encoder refines the backbone's stages 2-4, an audio-conditioned query generator
    and a transformer decoder turn one audio token per frame into `num_queries` queries, an
    audio-visual mixer gates the channels of the stride-4 mask feature, and a mask head combines
    the queries with that feature. The defaults are the official configs' values (every
    subset and backbone uses the same head); see the AVSegFormer docs page for what differs from
    the paper.

    Attributes:
        backbone_config (`dict` or `PreTrainedConfig`, *optional*):
            Any Transformers backbone config returning 4 feature maps (default: PVT-v2-b5;
            `avs_models.models.backbones.resnet50_backbone_config()` gives the official ResNet-50).
            Stage 1 feeds the mask feature, stages 2-4 the encoder.
        audio_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the audio encoder (VGGish, as in the official model) that turns log-mel
            `input_features` into embeddings. `None` builds a model that takes `audio_embeds` only.
        audio_embed_dim (`int`, defaults to 128):
            Width of one second's audio embedding (VGGish: 128).
        hidden_size (`int`, defaults to 256):
            Width `C` of every transformer token, query and of the mask feature.
        num_queries (`int`, defaults to 300):
            Queries made by the query generator (`Q`); also the input width of the mask MLP.
        query_generator_layers (`int`, defaults to 6):
            Layers of the query generator (self-attention, cross-attention to the audio token, FFN).
        query_generator_attention_heads (`int`, defaults to 8):
            Attention heads of the query generator.
        query_generator_ffn_dim (`int`, defaults to 1024):
            FFN width of the query generator.
        encoder_layers (`int`, defaults to 6):
            Deformable-attention encoder layers.
        encoder_attention_heads (`int`, defaults to 8):
            Heads of the multi-scale deformable attention.
        encoder_n_points (`int`, defaults to 4):
            Sampling points per head and feature level.
        encoder_ffn_dim (`int`, defaults to 2048):
            FFN width of the encoder.
        decoder_layers (`int`, defaults to 6):
            Decoder layers (self-attention, dense cross-attention to all encoder tokens, FFN). Only
            the last layer's queries make the prediction, as in the official code.
        decoder_attention_heads (`int`, defaults to 8):
            Attention heads of the decoder.
        decoder_ffn_dim (`int`, defaults to 2048):
            FFN width of the decoder.
        dropout (`float`, defaults to 0.1):
            Dropout of the encoder and decoder (residual branches, FFN activations and the
            decoder's attention probabilities). The query generator and the mixer have none.
        mixer_attention_heads (`int`, defaults to 8):
            Heads of the audio-visual mixer's attention (audio query over the mask feature's pixels).
        mask_mlp_hidden_size (`int`, defaults to 2048):
            Width of the two hidden 1x1 convolutions of the mask MLP (`Q -> 2048 -> 2048 -> C`).
        head_hidden_sizes (`list[int]`, defaults to `[128, 32]`):
            Channels of the prediction head's two 3x3 convolutions (the first before, the second
            after the x4 upsampling).
        group_norm_groups (`int`, defaults to 32):
            Groups of the GroupNorms after the input projections, the lateral and the output convolution.
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of the transformer LayerNorms.
        mask_loss (`str`, defaults to `"dice"`):
            Loss of binary models on the prediction and the mix loss's mask feature: `"dice"` (the
            official S4/MS3 configs) or `"bce"` (the official code's default). Multi-class models
            use cross-entropy on the prediction and Dice on the mask feature, as the official AVSS code.
        mask_loss_weight (`float`, defaults to 1.0):
            Weight of the prediction's loss (`iou_loss` in the official configs).
        mix_loss_weight (`float`, defaults to 0.1):
            Weight of the mix loss on the channel mean of the mask feature (`mix_loss`).
        freeze_audio_encoder (`bool`, defaults to `True`):
            Keep the audio encoder's weights fixed during training (the official forward always
            runs VGGish without gradients).
    """

    model_type = "avsegformer"
    sub_configs_defaults = {  # noqa: RUF012 (Transformers reads this class attribute)
        "backbone_config": SubConfigSpec(
            config_class=AutoConfig, model_type="pvt_v2", init_kwargs=copy.deepcopy(PVT_V2_B5_KWARGS)
        ),
    }

    backbone_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    audio_embed_dim: int = 128
    hidden_size: int = 256
    num_queries: int = 300
    query_generator_layers: int = 6
    query_generator_attention_heads: int = 8
    query_generator_ffn_dim: int = 1024
    encoder_layers: int = 6
    encoder_attention_heads: int = 8
    encoder_n_points: int = 4
    encoder_ffn_dim: int = 2048
    decoder_layers: int = 6
    decoder_attention_heads: int = 8
    decoder_ffn_dim: int = 2048
    dropout: float = 0.1
    mixer_attention_heads: int = 8
    mask_mlp_hidden_size: int = 2048
    head_hidden_sizes: list[int] | tuple[int, ...] = (128, 32)
    group_norm_groups: int = 32
    layer_norm_eps: float = 1e-5
    mask_loss: str = "dice"
    mask_loss_weight: float = 1.0
    mix_loss_weight: float = 0.1
    freeze_audio_encoder: bool = True
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.id2label is None:
            kwargs.setdefault("num_labels", 1)
        super().__post_init__(**kwargs)
        # Not a declared sub-config: resolved through the package's own lookup, which the Hub copy
        # of this file carries (see hub_code.py), so it works where avs_models is not installed.
        self.audio_config = sub_config_from_dict(self.audio_config)
        self.head_hidden_sizes = [int(size) for size in self.head_hidden_sizes]
        self._validate()

    def _validate(self) -> None:
        positive = (
            "audio_embed_dim", "hidden_size", "num_queries", "query_generator_layers", "encoder_layers",
            "decoder_layers", "encoder_n_points", "query_generator_ffn_dim", "encoder_ffn_dim",
            "decoder_ffn_dim", "mask_mlp_hidden_size",
        )  # fmt: skip
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in (
            "query_generator_attention_heads",
            "encoder_attention_heads",
            "decoder_attention_heads",
            "mixer_attention_heads",
            "group_norm_groups",
        ):
            value = int(getattr(self, name))
            if value < 1 or self.hidden_size % value:
                raise ValueError(
                    f"{name}={value} must be a positive divisor of hidden_size={self.hidden_size}"
                )
        if len(self.head_hidden_sizes) != 2 or min(self.head_hidden_sizes) < 1:
            raise ValueError(f"head_hidden_sizes must hold 2 positive sizes, got {self.head_hidden_sizes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.mask_loss not in MASK_LOSSES:
            raise ValueError(f"mask_loss must be one of {MASK_LOSSES}, got {self.mask_loss!r}")
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {self.num_labels}")
        check_four_stage_backbone("AVSegFormer", self.backbone_config)


__all__ = ["AVSegFormerConfig"]
