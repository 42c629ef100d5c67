"""Convert an official PCMANet checkpoint (PrettyPlate/PCMANet) to a `save_pretrained` folder.

Usage:

    python -m avs_models.models.pcmanet.convert_pcmanet_original_to_hf \
        --checkpoint S4_best.pth --output-dir pcmanet-resnet50-s4

The backbone (ResNet-50 or PVT-v2-b5), the number of classes and the AVGA group count are read
from the checkpoint itself. The file is read with `torch.load(weights_only=True)`, so no pickled
code is ever executed.

Two groups of official tensors have no counterpart because the official forward never uses
them: the second ResNet branch of `B2_ResNet` (`resnet.layer3_2.*`, `resnet.layer4_2.*`) and
the deepest guided-fusion block's unused convolution (`gf4.seq2.*`). They are dropped and listed.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from ...data.avss_classes import AVSS_NUM_CLASSES, avss_id2label
from ...hub import write_conversion_card
from ..backbones import (
    convert_official_pvt_v2_state_dict,
    pvt_v2_b5_backbone_config,
    rename_official_resnet_key,
    resnet50_backbone_config,
)
from ..conversion_utils import build_converted_model, read_official_state_dict
from .configuration_pcmanet import PCMANetConfig
from .modeling_pcmanet import PCMANetForAudioVisualSegmentation

_CONV_LAYER = {"0": "convolution", "1": "normalization"}
_QSCA_PARTS = {
    "aud_fc": "audio_projection",
    "attn.to_patch_embedding.1": "token_embedding",
    "attn.transformer.layers.0.0.norm": "layer_norm",
    "attn.transformer.layers.0.0.fn.v_to_q": "visual_query",
    "attn.transformer.layers.0.0.fn.v_to_kv": "visual_key_value",
    "attn.transformer.layers.0.0.fn.a_to_qkv": "audio_query_key_value",
    "attn.transformer.layers.0.0.fn.to_out.0": "output_projection",
}
_HEAD_PARTS = {"0": "conv.convolution", "1": "conv.normalization", "3": "classifier"}
_UNUSED_OFFICIAL_KEY = re.compile(r"^(resnet\.layer[34]_2\.|gf4\.seq2\.)")


def load_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official `.pth` safely and strip the `module.` prefix of DataParallel training."""
    return read_official_state_dict(
        path, "a PCMANet state dict", wrappers=("state_dict", "model")
    )


def config_from_official_state_dict(state_dict: dict[str, torch.Tensor], **overrides) -> PCMANetConfig:
    """Infer the backbone, width, class count and AVGA groups of an official checkpoint."""
    if "conv1.0.weight" not in state_dict or "output_conv1.3.weight" not in state_dict:
        raise ValueError(
            "Not an official PCMANet state dict: missing 'conv1.0.weight' / 'output_conv1.3.weight'"
        )
    if any(key.startswith("resnet.") for key in state_dict):
        backbone_config = resnet50_backbone_config()
    elif any(key.startswith("encoder_backbone.") for key in state_dict):
        backbone_config = pvt_v2_b5_backbone_config()
    else:
        raise ValueError(
            "Unknown backbone: expected 'resnet.*' (ResNet-50) or 'encoder_backbone.*' (PVT-v2) keys"
        )
    hidden_size = state_dict["conv1.0.weight"].shape[0]
    kwargs = {
        "backbone_config": backbone_config,
        "hidden_size": hidden_size,
        "avga_groups": hidden_size // state_dict["avga1.seq1.0.weight"].shape[1],
        "num_labels": state_dict["output_conv1.3.weight"].shape[0],
    }
    if kwargs["num_labels"] == AVSS_NUM_CLASSES:  # an AVSS checkpoint: its classes get their names
        kwargs["id2label"] = avss_id2label()
    kwargs.update(overrides)
    return PCMANetConfig(**kwargs)


def _rename_head_key(key: str) -> str | None:
    """Name in our model of one official non-backbone key, or None if it has none."""
    parts = key.split(".")
    name = parts[0]
    if name in ("aud_fc1", "aud_fc"):  # the MS3 PVT file names it `aud_fc`
        return "audio_projection." + ".".join(parts[1:])
    match = re.fullmatch(r"(conv|avga|qsca|gf|output_conv)(\d)", name)
    if match is None:
        return None
    kind, stage = match.group(1), int(match.group(2)) - 1
    rest = ".".join(parts[1:])
    if kind == "conv":
        return f"stage_projections.{stage}.{_CONV_LAYER[parts[1]]}.{parts[2]}"
    if kind == "avga":
        if parts[1] == "fc":
            return f"grouped_attention.{stage}.audio_mlp.{parts[2]}.{parts[3]}"
        layer = {"seq1": "grouped_conv", "seq2": "output_conv"}[parts[1]]
        return f"grouped_attention.{stage}.{layer}.{_CONV_LAYER[parts[2]]}.{parts[3]}"
    if kind == "qsca":
        for official, ours in _QSCA_PARTS.items():
            if rest.startswith(official + "."):
                return f"cross_attention.{stage}.{ours}{rest[len(official) :]}"
        return None
    if kind == "gf":
        # The deepest stage has no deeper map: its guide goes through `seq1`.
        roles = (
            {"seq1": "guide_conv", "seq3": "output_conv"}
            if stage == 3
            else {"seq1": "deeper_conv", "seq2": "guide_conv", "seq3": "output_conv"}
        )
        if parts[1] not in roles:
            return None
        return f"fusion.{stage}.{roles[parts[1]]}.{_CONV_LAYER[parts[2]]}.{parts[3]}"
    return f"heads.{stage}.{_HEAD_PARTS[parts[1]]}.{parts[2]}"


def convert_state_dict(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an official state dict to ours.

    Returns the converted state dict and the official keys that were dropped because the
    official forward never uses them. Any other key without a counterpart raises `KeyError`.
    """
    converted: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    pvt_weights = {}
    for key, tensor in state_dict.items():
        if _UNUSED_OFFICIAL_KEY.match(key):
            dropped.append(key)
        elif key.startswith("encoder_backbone."):
            pvt_weights[key.removeprefix("encoder_backbone.")] = tensor
        elif key.startswith("resnet."):
            new_key = rename_official_resnet_key(key.removeprefix("resnet."))
            if new_key is None:
                raise KeyError(f"Unexpected ResNet key in official PCMANet checkpoint: {key!r}")
            converted["backbone." + new_key] = tensor
        else:
            new_key = _rename_head_key(key)
            if new_key is None:
                raise KeyError(f"Unexpected key in official PCMANet checkpoint: {key!r}")
            converted[new_key] = tensor
    for key, tensor in convert_official_pvt_v2_state_dict(pvt_weights).items():
        converted["backbone." + key] = tensor
    return converted, dropped


def convert_pcmanet_checkpoint(
    official_state_dict: dict[str, torch.Tensor],
    audio_encoder_dir: str | Path | None = None,
    **config_overrides,
) -> tuple[PCMANetForAudioVisualSegmentation, list[str]]:
    """Build our model from an official state dict; returns the model and the dropped keys.

    Every tensor of our model must come from the checkpoint: a missing one (or a leftover or
    mis-shaped one) raises `ValueError` listing them.
    The official models take VGGish embeddings; with `audio_encoder_dir` (a converted VGGish
    folder, see `convert_vggish_original_to_hf`) the model embeds log-mel `input_features` itself.
    """
    return build_converted_model(
        PCMANetForAudioVisualSegmentation,
        config_from_official_state_dict,
        convert_state_dict,
        official_state_dict,
        audio_encoder_dir,
        **config_overrides,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="official PCMANet .pth state dict")
    parser.add_argument("--output-dir", required=True, help="folder for config.json + model.safetensors")
    parser.add_argument(
        "--vggish-dir", help="converted VGGish folder to embed log-mel input inside the model"
    )
    parser.add_argument(
        "--qsca-token-layout",
        choices=["official", "spatial"],
        default="official",
        help="keep 'official' for converted weights (see the PCMANet docs)",
    )
    args = parser.parse_args(argv)
    model, dropped = convert_pcmanet_checkpoint(
        load_official_state_dict(args.checkpoint), args.vggish_dir, qsca_token_layout=args.qsca_token_layout
    )
    model.save_pretrained(args.output_dir)
    write_conversion_card(args.output_dir, argv)  # README.md, the model card
    print(
        f"Saved {model.num_parameters():,} parameters to {args.output_dir}; dropped "
        f"{len(dropped)} tensors the official forward never uses ({sum(1 for k in dropped if 'gf4' in k)} of gf4.seq2)."
    )


if __name__ == "__main__":
    main()
