"""Convert an official AVSegFormer checkpoint (vvvb-github/AVSegFormer) to a `save_pretrained` folder.

Usage:

    python -m avs_models.models.avsegformer.convert_avsegformer_original_to_hf \
        --checkpoint S4_best.pth --output-dir avsegformer-resnet50-s4

The official train scripts save `model.module.state_dict()` of their `AVSegFormer` class, VGGish
included; this script reads that file with `torch.load(weights_only=True)` (no pickled code is
ever executed) and infers the backbone (ResNet-50 or PVT-v2-b5), the widths, the layer counts and
the number of classes from the tensors. The model embeds log-mel input with the checkpoint's
own VGGish. A processor is saved next to the weights with the official test-time input: 512x512
frames and 5-frame clips for binary (S4, MS3) checkpoints, 224x224 and 10 frames for AVSS ones.

Official tensors the official forward never uses are dropped and listed: the head's `fpn.*` and
`attn_fc.*` (the code that called them is commented out) and, for ResNet-50, the second branch
`backbone.layer3_2.*` / `backbone.layer4_2.*` of `B2_ResNet`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from ...data.avss_classes import AVSS_NUM_CLASSES, avss_id2label
from ...hub import write_conversion_card
from ...processing import processor_for
from ..backbones import (
    convert_official_pvt_v2_state_dict,
    pvt_v2_b5_backbone_config,
    rename_official_resnet_key,
    resnet50_backbone_config,
)
from ..conversion_utils import load_state_dict_strictly, read_official_state_dict
from ..labels import is_semantic_segmentation
from ..vggish.configuration_vggish import VGGishConfig
from ..vggish.convert_vggish_original_to_hf import convert_vggish_state_dict
from .configuration_avsegformer import AVSegFormerConfig
from .modeling_avsegformer import AVSegFormerForAudioVisualSegmentation

_UNUSED_OFFICIAL_KEY = re.compile(r"^(head\.fpn\.|head\.attn_fc\.|backbone\.layer[34]_2\.)")
# The official AVSS PVT-v2-b5 is built with stochastic depth 0.1 (`pvt_v2_b5` in model/backbone/pvt.py).
_PVT_DROP_PATH_RATE = 0.1
# Official test-time frames: the S4/MS3 loaders resize to 512x512 (their configs' `img_size` is
# unused); the AVSS loader resizes to `crop_size` 224. AVSS clips are padded to 10 frames.
_BINARY_INPUT = {"image_size": 512, "num_frames": 5}
_SEMANTIC_INPUT = {"image_size": 224, "num_frames": 10}

# Official head keys (after `head.`) -> ours, by prefix.
_HEAD_PARTS = {
    "level_embed": "position_embedding.level_embed",
    "learnable_query.weight": "query_generator.learnable_queries",
    "query_generator.query.weight": "query_generator.initial_queries",
    "lateral_conv.0": "lateral_conv.convolution",
    "lateral_conv.1": "lateral_conv.normalization",
    "out_conv.0": "output_conv.convolution",
    "out_conv.1": "output_conv.normalization",
    "fusion_block.q_proj": "mixer.attention.q_proj",
    "fusion_block.proj": "mixer.attention.o_proj",
    "fc.0": "mask_head.projection",
    "fc.2": "mask_head.refinement",
    "fc.4": "mask_head.classifier",
}
_INDEXED_HEAD_PART = re.compile(r"^(in_proj\.(\d+)\.([01])|mlp\.layers\.(\d+))\.(.+)$")
# Transformer layers: official stack -> ours, and the parts inside one layer.
_LAYER = re.compile(r"^(query_generator|transformer\.encoder|transformer\.decoder)\.layers\.(\d+)\.(.+)$")
_STACKS = {
    "query_generator": "query_generator",
    "transformer.encoder": "encoder",
    "transformer.decoder": "decoder",
}
_LAYER_PARTS = {
    "query_generator": {
        "norm1": "self_attn_layer_norm",
        "norm2": "cross_attn_layer_norm",
        "norm3": "final_layer_norm",
        "ffn.0": "mlp.fc1",
        "ffn.2": "mlp.fc2",
    },
    "transformer.encoder": {
        "self_attn": "self_attn",  # the deformable attention keeps the official names
        "norm1": "self_attn_layer_norm",
        "norm2": "final_layer_norm",
        "linear1": "mlp.fc1",
        "linear2": "mlp.fc2",
    },
    "transformer.decoder": {
        "norm1": "self_attn_layer_norm",
        "norm2": "cross_attn_layer_norm",
        "norm3": "final_layer_norm",
        "linear1": "mlp.fc1",
        "linear2": "mlp.fc2",
    },
}
# `nn.MultiheadAttention` parameters of the query generator and decoder (`in_proj` is q, k, v stacked).
_ATTENTION = re.compile(
    r"^(self_attn|cross_attn)\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)$"
)


def load_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official `.pth` (a `model.module.state_dict()`) safely; a `module.` prefix is stripped."""
    return read_official_state_dict(path, "an AVSegFormer state dict")


def _layer_count(state_dict: dict[str, torch.Tensor], stack: str) -> int:
    pattern = re.compile(rf"^head\.{re.escape(stack)}\.layers\.(\d+)\.")
    indices = {int(match.group(1)) for key in state_dict if (match := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def config_from_official_state_dict(state_dict: dict[str, torch.Tensor], **overrides) -> AVSegFormerConfig:
    """Infer backbone, widths, layer counts and classes of an official checkpoint (VGGish inside)."""
    required = (
        "audio_proj.weight",
        "head.learnable_query.weight",
        "head.fc.4.weight",
        "vggish.features.0.weight",
    )
    if missing := [key for key in required if key not in state_dict]:
        raise ValueError(f"Not an official AVSegFormer state dict: missing {missing}")
    if "backbone.layer1.0.conv1.weight" in state_dict:
        backbone_config = resnet50_backbone_config()
    elif "backbone.patch_embed1.proj.weight" in state_dict:
        backbone_config = pvt_v2_b5_backbone_config(drop_path_rate=_PVT_DROP_PATH_RATE)
    else:
        raise ValueError(
            "Unknown backbone: expected 'backbone.layer1.*' (ResNet-50) or 'backbone.patch_embed1.*' (PVT-v2-b5) keys"
        )
    num_labels = state_dict["head.fc.4.weight"].shape[0]
    kwargs = {
        "backbone_config": backbone_config,
        "audio_config": VGGishConfig(),
        "audio_embed_dim": state_dict["audio_proj.weight"].shape[1],
        "hidden_size": state_dict["audio_proj.weight"].shape[0],
        "num_queries": state_dict["head.learnable_query.weight"].shape[0],
        "query_generator_layers": _layer_count(state_dict, "query_generator"),
        "query_generator_ffn_dim": state_dict["head.query_generator.layers.0.ffn.0.weight"].shape[0],
        "encoder_layers": _layer_count(state_dict, "transformer.encoder"),
        "encoder_ffn_dim": state_dict["head.transformer.encoder.layers.0.linear1.weight"].shape[0],
        "decoder_layers": _layer_count(state_dict, "transformer.decoder"),
        "decoder_ffn_dim": state_dict["head.transformer.decoder.layers.0.linear1.weight"].shape[0],
        "mask_mlp_hidden_size": state_dict["head.mlp.layers.0.weight"].shape[0],
        "head_hidden_sizes": [
            state_dict["head.fc.0.weight"].shape[0],
            state_dict["head.fc.2.weight"].shape[0],
        ],
    }
    if num_labels == AVSS_NUM_CLASSES:
        kwargs["id2label"] = avss_id2label()
    else:
        kwargs["num_labels"] = num_labels
    kwargs.update(overrides)
    return AVSegFormerConfig(**kwargs)


def _rename_layer_key(
    stack: str, index: str, rest: str, tensor: torch.Tensor
) -> dict[str, torch.Tensor] | None:
    prefix = f"{_STACKS[stack]}.layers.{index}."
    if stack != "transformer.encoder" and (match := _ATTENTION.match(rest)):
        attention, parameter = match.groups()
        if parameter.startswith("in_proj"):
            suffix = "weight" if parameter.endswith("weight") else "bias"
            return {
                f"{prefix}{attention}.{name}.{suffix}": part.clone()
                for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0))
            }
        return {f"{prefix}{attention}.o_proj.{parameter.split('.')[-1]}": tensor}
    for official, ours in _LAYER_PARTS[stack].items():
        if rest.startswith(official + "."):
            return {prefix + ours + rest[len(official) :]: tensor}
    return None


def _rename_head_key(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """Our name(s) of one official `head.*` tensor (after the prefix), or None if it has none."""
    if match := _LAYER.match(key):
        return _rename_layer_key(*match.groups(), tensor)
    if key == "fusion_block.kv_proj.weight":
        key_part, value_part = tensor.chunk(2, dim=0)
        return {
            "mixer.attention.k_proj.weight": key_part.clone(),
            "mixer.attention.v_proj.weight": value_part.clone(),
        }
    if match := _INDEXED_HEAD_PART.match(key):
        _, projection, layer, mlp_layer, parameter = match.groups()
        if projection is not None:
            part = "convolution" if layer == "0" else "normalization"
            return {f"input_projections.{projection}.{part}.{parameter}": tensor}
        return {f"mask_head.mlp.{mlp_layer}.{parameter}": tensor}
    for official, ours in _HEAD_PARTS.items():
        if key == official:
            return {ours: tensor}
        if key.startswith(official + "."):
            return {ours + key[len(official) :]: tensor}
    return None


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], audio_config: VGGishConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an official state dict to ours.

    Returns the converted state dict and the official keys dropped because the official forward
    never uses them. Any other key without a counterpart raises `KeyError`.
    """
    converted: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    pvt_weights, vggish_weights = {}, {}
    for key, tensor in state_dict.items():
        if _UNUSED_OFFICIAL_KEY.match(key):
            dropped.append(key)
        elif key.startswith("vggish."):
            vggish_weights[key.removeprefix("vggish.")] = tensor
        elif key.startswith("backbone.patch_embed") or re.match(r"^backbone\.(block|norm)\d", key):
            pvt_weights[key.removeprefix("backbone.")] = tensor
        elif key.startswith("backbone."):
            new_key = rename_official_resnet_key(key.removeprefix("backbone."))
            if new_key is None:
                raise KeyError(f"Unexpected backbone key in official AVSegFormer checkpoint: {key!r}")
            converted["backbone." + new_key] = tensor
        elif key.startswith("audio_proj."):
            converted["audio_projection." + key.removeprefix("audio_proj.")] = tensor
        elif key.startswith("head.") and (renamed := _rename_head_key(key.removeprefix("head."), tensor)):
            converted.update(renamed)
        else:
            raise KeyError(f"Unexpected key in official AVSegFormer checkpoint: {key!r}")
    for key, tensor in convert_official_pvt_v2_state_dict(pvt_weights).items():
        converted["backbone." + key] = tensor
    for key, tensor in convert_vggish_state_dict(vggish_weights, audio_config).items():
        converted["audio_encoder." + key] = tensor
    return converted, dropped


def convert_avsegformer_checkpoint(
    official_state_dict: dict[str, torch.Tensor], **config_overrides
) -> tuple[AVSegFormerForAudioVisualSegmentation, list[str]]:
    """Build our model from an official state dict; returns the model (eval mode) and the dropped keys.

    Every tensor of our model comes from the checkpoint, except VGGish's PCA post-processing
    buffers (the official model runs without PCA, `postprocess_log_mel_with_pca=False`), which
    keep their identity initialisation. A missing, leftover or mis-shaped tensor raises
    `ValueError` listing them.
    """
    config = config_from_official_state_dict(official_state_dict, **config_overrides)
    model = AVSegFormerForAudioVisualSegmentation(config)
    converted, dropped = convert_state_dict(official_state_dict, config.audio_config)
    converted.update(
        {
            key: value
            for key, value in model.state_dict().items()
            if key.startswith("audio_encoder.postprocessor.")
        }
    )
    load_state_dict_strictly(model, converted)
    return model.eval(), dropped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="official AVSegFormer .pth state dict")
    parser.add_argument("--output-dir", required=True, help="folder for the model, its config and processor")
    parser.add_argument(
        "--image-size",
        type=int,
        help="frame size of the saved processor (default: 512 for binary, 224 for AVSS checkpoints, as the official loaders)",
    )
    args = parser.parse_args(argv)
    model, dropped = convert_avsegformer_checkpoint(load_official_state_dict(args.checkpoint))
    model.save_pretrained(args.output_dir)
    inputs = dict(_SEMANTIC_INPUT if is_semantic_segmentation(model.config) else _BINARY_INPUT)
    if args.image_size is not None:
        inputs["image_size"] = args.image_size
    processor_for(model.config, **inputs).save_pretrained(args.output_dir)
    write_conversion_card(args.output_dir, argv)  # README.md, the model card
    print(
        f"Saved {model.num_parameters():,} parameters and a processor ({inputs['image_size']}x{inputs['image_size']} "
        f"frames, {inputs['num_frames']}-frame clips) to {args.output_dir}; dropped {len(dropped)} tensors the "
        "official forward never uses (head.fpn, head.attn_fc, ResNet layer3_2/layer4_2)."
    )


if __name__ == "__main__":
    main()
