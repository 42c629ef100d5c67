"""Vision backbones shared by the AVS models.

Backbones are Transformers' own (`ResNet`, `PvtV2`, `Swin`) loaded with `load_backbone`, so a
backbone is a config choice, never copied code. This module holds the presets the papers use and
the key renaming that turns the official research checkpoints' backbone weights into the
Transformers layout.
"""

from __future__ import annotations

import copy
import re

import torch
from transformers import PvtV2Config, ResNetConfig, SwinConfig

ALL_STAGES = ["stage1", "stage2", "stage3", "stage4"]


def check_four_stage_backbone(model_name: str, backbone_config) -> None:
    """Refuse a backbone config whose `out_features` do not name 4 stages (the decoders of every
    model here take one feature map per stage); a config without `out_features` gives all 4.

    Raises:
        ValueError: naming the model and the `out_features` found.
    """
    out_features = getattr(backbone_config, "out_features", ALL_STAGES)
    if len(out_features) != 4:
        raise ValueError(
            f"{model_name} needs a backbone returning 4 feature maps; backbone_config.out_features is "
            f"{out_features}"
        )


def resnet50_backbone_config(**overrides) -> ResNetConfig:
    """ResNet-50 (torchvision layout: stride in the 3x3 conv) returning the 4 stage feature maps."""
    kwargs = {
        "embedding_size": 64,
        "hidden_sizes": [256, 512, 1024, 2048],
        "depths": [3, 4, 6, 3],
        "layer_type": "bottleneck",
        "downsample_in_bottleneck": False,
        "out_features": ALL_STAGES,
    }
    kwargs.update(overrides)
    return ResNetConfig(**kwargs)


# PVT-v2-b5 (depths 3/6/40/3, widths 64/128/320/512) returning the 4 stage feature maps; also
# C3N's default backbone.
PVT_V2_B5_KWARGS = {
    "depths": [3, 6, 40, 3],
    "hidden_sizes": [64, 128, 320, 512],
    "num_attention_heads": [1, 2, 5, 8],
    "mlp_ratios": [4, 4, 4, 4],
    "sr_ratios": [8, 4, 2, 1],
    "layer_norm_eps": 1e-6,
    "out_features": ALL_STAGES,
}


def pvt_v2_b5_backbone_config(**overrides) -> PvtV2Config:
    """PVT-v2-b5 (depths 3/6/40/3, widths 64/128/320/512) returning the 4 stage feature maps."""
    return PvtV2Config(**{**copy.deepcopy(PVT_V2_B5_KWARGS), **overrides})


def swin_base_backbone_config(**overrides) -> SwinConfig:
    """Swin-B (window 7, 224x224, widths 128/256/512/1024) returning the 4 stage feature maps."""
    kwargs = {
        "image_size": 224,
        "patch_size": 4,
        "embed_dim": 128,
        "depths": [2, 2, 18, 2],
        "num_heads": [4, 8, 16, 32],
        "window_size": 7,
        "out_features": ALL_STAGES,
    }
    kwargs.update(overrides)
    return SwinConfig(**kwargs)


_RESNET_BLOCK = re.compile(r"^layer(\d)(?:_1)?\.(\d+)\.(.+)$")
_RESNET_IN_BLOCK = {
    "conv1": "layer.0.convolution",
    "bn1": "layer.0.normalization",
    "conv2": "layer.1.convolution",
    "bn2": "layer.1.normalization",
    "conv3": "layer.2.convolution",
    "bn3": "layer.2.normalization",
    "downsample.0": "shortcut.convolution",
    "downsample.1": "shortcut.normalization",
}


def rename_official_resnet_key(key: str) -> str | None:
    """Map a torchvision-style ResNet key (`layer3.0.conv1.weight`) to `ResNetBackbone`'s.

    The PCMANet code's `B2_ResNet` names its used branch `layer3_1`/`layer4_1`; those map like
    `layer3`/`layer4`. Keys of its second branch (`layer3_2`, `layer4_2`), which the official
    forward never calls, and of the classifier (`fc`) return `None`.
    """
    if key.startswith(("conv1.", "bn1.")):
        layer, _, param = key.partition(".")
        target = "convolution" if layer == "conv1" else "normalization"
        return f"embedder.embedder.{target}.{param}"
    match = _RESNET_BLOCK.match(key)
    if match is None:
        return None
    stage, block, rest = int(match.group(1)), match.group(2), match.group(3)
    for official, ours in _RESNET_IN_BLOCK.items():
        if rest.startswith(official + "."):
            return f"encoder.stages.{stage - 1}.layers.{block}.{ours}{rest[len(official) :]}"
    return None


_PVT_RENAMES = [
    (re.compile(r"^patch_embed(\d)\.proj\.(.+)$"), "encoder.layers.{s}.patch_embedding.proj.{1}"),
    (re.compile(r"^patch_embed(\d)\.norm\.(.+)$"), "encoder.layers.{s}.patch_embedding.layer_norm.{1}"),
    (re.compile(r"^norm(\d)\.(.+)$"), "encoder.layers.{s}.layer_norm.{1}"),
]
_PVT_BLOCK = re.compile(r"^block(\d)\.(\d+)\.(.+)$")
_PVT_IN_BLOCK = {
    "norm1": "layer_norm_1",
    "norm2": "layer_norm_2",
    "attn.q": "attention.query",
    "attn.proj": "attention.proj",
    "attn.sr": "attention.spatial_reduction",
    "attn.norm": "attention.layer_norm",
    "mlp.fc1": "mlp.dense1",
    "mlp.fc2": "mlp.dense2",
    "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
}


def convert_official_pvt_v2_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert an official PVT-v2 state dict (`block1.0.attn.kv.weight`, ...) to `PvtV2Backbone`'s.

    The fused `attn.kv` projection is split into `key` and `value`; the classifier `head` is
    dropped. Raises `KeyError` naming any key that has no place in the Transformers layout.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key.startswith("head."):
            continue
        for pattern, template in _PVT_RENAMES:
            match = pattern.match(key)
            if match:
                converted[template.format(None, match.group(2), s=int(match.group(1)) - 1)] = tensor
                break
        else:
            match = _PVT_BLOCK.match(key)
            if match is None:
                raise KeyError(f"Unexpected key in official PVT-v2 checkpoint: {key!r}")
            stage, block, rest = int(match.group(1)) - 1, match.group(2), match.group(3)
            prefix = f"encoder.layers.{stage}.blocks.{block}."
            if rest.startswith("attn.kv."):
                key_part, value_part = tensor.chunk(2, dim=0)
                param = rest[len("attn.kv.") :]
                converted[prefix + "attention.key." + param] = key_part.clone()
                converted[prefix + "attention.value." + param] = value_part.clone()
                continue
            for official, ours in _PVT_IN_BLOCK.items():
                if rest.startswith(official + "."):
                    converted[prefix + ours + rest[len(official) :]] = tensor
                    break
            else:
                raise KeyError(f"Unexpected key in official PVT-v2 checkpoint: {key!r}")
    return converted


_SWIN_IN_BLOCK = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.o_proj",
    "attn.relative_position_bias_table": "attention.relative_position_bias.relative_position_bias_table",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_SWIN_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_SWIN_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")
_SWIN_STAGE_NORM = re.compile(r"^norm(\d)\.(.+)$")


def convert_official_swin_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert an official (segmentation-style) Swin state dict to `SwinBackbone`'s.

    Both layouts put patch merging at the end of stage i (`layers.i.downsample`). The fused
    `attn.qkv` projection is split into `q_proj`/`k_proj`/`v_proj`; the per-stage output norms
    `norm0..norm3` become `hidden_states_norms.stage1..stage4`; a final `norm` becomes
    `swin.layernorm`; `relative_position_index` buffers (recomputed by Transformers) and the
    classifier `head` are dropped. Raises `KeyError` naming any key with no place in the layout.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key.startswith("head.") or key.endswith(("relative_position_index", "attn_mask")):
            continue
        if key.startswith("patch_embed.proj."):
            converted["swin.embeddings.patch_embeddings.projection." + key[len("patch_embed.proj.") :]] = (
                tensor
            )
            continue
        if key.startswith("patch_embed.norm."):
            converted["swin.embeddings.norm." + key[len("patch_embed.norm.") :]] = tensor
            continue
        if key.startswith("norm."):
            converted["swin.layernorm." + key[len("norm.") :]] = tensor
            continue
        match = _SWIN_STAGE_NORM.match(key)
        if match:
            converted[f"hidden_states_norms.stage{int(match.group(1)) + 1}.{match.group(2)}"] = tensor
            continue
        match = _SWIN_DOWNSAMPLE.match(key)
        if match:
            converted[f"swin.encoder.layers.{match.group(1)}.downsample.{match.group(2)}"] = tensor
            continue
        match = _SWIN_BLOCK.match(key)
        if match is None:
            raise KeyError(f"Unexpected key in official Swin checkpoint: {key!r}")
        prefix = f"swin.encoder.layers.{match.group(1)}.blocks.{match.group(2)}."
        rest = match.group(3)
        if rest.startswith("attn.qkv."):
            param = rest[len("attn.qkv.") :]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                converted[f"{prefix}attention.{name}.{param}"] = part.clone()
            continue
        for official, ours in _SWIN_IN_BLOCK.items():
            if rest.startswith(official + ".") or rest == official:
                converted[prefix + ours + rest[len(official) :]] = tensor
                break
        else:
            raise KeyError(f"Unexpected key in official Swin checkpoint: {key!r}")
    return converted
