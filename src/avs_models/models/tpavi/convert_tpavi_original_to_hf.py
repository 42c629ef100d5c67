"""Convert an official TPAVI checkpoint (OpenNLPLab/AVSBench) to a `save_pretrained` folder.

Usage:

    python -m avs_models.models.tpavi.convert_tpavi_original_to_hf \
        --checkpoint S4_best.pth --output-dir tpavi-resnet50-s4

The official train scripts save `model.module.state_dict()` of `Pred_endecoder`. The backbone
(ResNet-50 or PVT-v2-b5), the TPAVI stages, the class count (1 for S4/MS3, 71 for AVSS) and
whether TPAVI's audio projection has a bias (not in the AVSS code) are read from the checkpoint.
The file is read with `torch.load(weights_only=True)`, so no pickled code is ever executed. A
processor is saved next to the weights with the official input: 224x224 frames in clips of 5
frames (S4, MS3) or 10 (AVSS).

Two groups of official tensors have no counterpart because the official forward never uses
them: the second ResNet branch of `B2_ResNet` (`resnet.layer3_2.*`, `resnet.layer4_2.*`) and the
deepest fusion block's skip unit (`path4.resConfUnit1.*`, the deepest stage has no skip input).
They are dropped and counted.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from ...data.avss_classes import AVSS_CLASS_NAMES
from ...hub import write_conversion_card
from ...processing import processor_for
from ..backbones import (
    convert_official_pvt_v2_state_dict,
    pvt_v2_b5_backbone_config,
    rename_official_resnet_key,
    resnet50_backbone_config,
)
from ..conversion_utils import build_converted_model, read_official_state_dict
from ..labels import is_semantic_segmentation
from .configuration_tpavi import TPAVIConfig
from .modeling_tpavi import TPAVIForAudioVisualSegmentation

UNUSED_OFFICIAL_KEY = re.compile(r"^(resnet\.layer[34]_2\.|path4\.resConfUnit1\.)")
_TPAVI_PARTS = {
    "align_channel": "audio_projection",
    "theta": "query",
    "phi": "key",
    "g": "value",
    "W_z.0": "output",
    "W_z.1": "output_norm",
    "norm_layer": "layer_norm",
}
_HEAD_PARTS = {"0": "conv1", "2": "conv2", "4": "classifier"}
_FUSION_PARTS = {"resConfUnit1": "skip_unit", "resConfUnit2": "output_unit"}


def load_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official `.pth` safely (a mapping of names to tensors, as the train scripts save)."""
    return read_official_state_dict(path, "a TPAVI state dict")


def config_from_official_state_dict(state_dict: dict[str, torch.Tensor], **overrides) -> TPAVIConfig:
    """Infer the backbone, widths, TPAVI stages, audio bias and class count of an official checkpoint."""
    for required in ("conv1.conv2d_list.0.weight", "output_conv.0.weight", "output_conv.4.weight"):
        if required not in state_dict:
            raise ValueError(
                f"Not an official TPAVI (AVSBench Pred_endecoder) state dict: missing {required!r}"
            )
    if any(key.startswith("resnet.") for key in state_dict):
        backbone_config = resnet50_backbone_config()
    elif any(key.startswith("encoder_backbone.") for key in state_dict):
        backbone_config = pvt_v2_b5_backbone_config()
    else:
        raise ValueError(
            "Unknown backbone: expected 'resnet.*' (ResNet-50) or 'encoder_backbone.*' (PVT-v2) keys"
        )
    stages = sorted(
        {int(match.group(1)) - 1 for key in state_dict if (match := re.match(r"tpavi_b(\d)\.", key))}
    )
    num_aspp_convs = len({key for key in state_dict if re.match(r"conv1\.conv2d_list\.\d+\.weight$", key)})
    if num_aspp_convs != 4:
        raise ValueError(
            f"expected the 4 dilated convolutions (rates 3, 6, 12, 18) per ASPP, found {num_aspp_convs}"
        )
    kwargs = {
        "backbone_config": backbone_config,
        "hidden_size": state_dict["conv1.conv2d_list.0.weight"].shape[0],
        "tpavi_stages": stages,
        "head_hidden_sizes": [
            state_dict["output_conv.0.weight"].shape[0],
            state_dict["output_conv.2.weight"].shape[0],
        ],
        "num_labels": state_dict["output_conv.4.weight"].shape[0],
    }
    if stages:
        first = f"tpavi_b{stages[0] + 1}.align_channel."
        kwargs["audio_embed_dim"] = state_dict[first + "weight"].shape[1]
        kwargs["tpavi_audio_bias"] = first + "bias" in state_dict
    if kwargs["num_labels"] == len(AVSS_CLASS_NAMES):
        kwargs["id2label"] = dict(enumerate(AVSS_CLASS_NAMES))
    kwargs.update(overrides)
    return TPAVIConfig(**kwargs)


def _rename_head_key(key: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    """Name (and layout) in our model of one official non-backbone key, or None if it has none."""
    if match := re.fullmatch(r"conv(\d)\.conv2d_list\.(\d+)\.(weight|bias)", key):
        return f"aspp.{int(match.group(1)) - 1}.convs.{match.group(2)}.{match.group(3)}", tensor
    if match := re.fullmatch(r"path(\d)\.(resConfUnit[12])\.(conv[12]\.(?:weight|bias))", key):
        return f"decoder.{int(match.group(1)) - 1}.{_FUSION_PARTS[match.group(2)]}.{match.group(3)}", tensor
    if match := re.fullmatch(r"output_conv\.(\d)\.(weight|bias)", key):
        part = _HEAD_PARTS.get(match.group(1))
        return (f"head.{part}.{match.group(2)}", tensor) if part else None
    if match := re.fullmatch(r"tpavi_b(\d)\.(.+)\.([a-z_]+)", key):
        part = _TPAVI_PARTS.get(match.group(2))
        if part is None:
            return None
        if tensor.dim() == 5:  # 1x1x1 Conv3d weights -> linear weights
            tensor = tensor.flatten(1)
        return f"tpavi_blocks.{int(match.group(1)) - 1}.{part}.{match.group(3)}", tensor
    return None


def convert_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an official state dict to ours.

    Returns the converted state dict and the official keys that were dropped because the
    official forward never uses them. Any other key without a counterpart raises `KeyError`.
    """
    converted: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    pvt_weights = {}
    for key, tensor in state_dict.items():
        if UNUSED_OFFICIAL_KEY.match(key):
            dropped.append(key)
        elif key.startswith("encoder_backbone."):
            pvt_weights[key.removeprefix("encoder_backbone.")] = tensor
        elif key.startswith("resnet."):
            new_key = rename_official_resnet_key(key.removeprefix("resnet."))
            if new_key is None:
                raise KeyError(f"Unexpected ResNet key in official TPAVI checkpoint: {key!r}")
            converted["backbone." + new_key] = tensor
        else:
            renamed = _rename_head_key(key, tensor)
            if renamed is None:
                raise KeyError(f"Unexpected key in official TPAVI checkpoint: {key!r}")
            converted[renamed[0]] = renamed[1]
    for key, tensor in convert_official_pvt_v2_state_dict(pvt_weights).items():
        converted["backbone." + key] = tensor
    return converted, dropped


def convert_tpavi_checkpoint(
    official_state_dict: dict[str, torch.Tensor],
    audio_encoder_dir: str | Path | None = None,
    **config_overrides,
) -> tuple[TPAVIForAudioVisualSegmentation, list[str]]:
    """Build our model from an official state dict; returns the model and the dropped keys.

    Every tensor of our model must come from the checkpoint: a missing one (or a leftover or
    mis-shaped one) raises `ValueError` listing them. The official models take VGGish
    embeddings; with `audio_encoder_dir` (a converted VGGish folder, see
    `convert_vggish_original_to_hf`) the model embeds log-mel `input_features` itself.
    """
    return build_converted_model(
        TPAVIForAudioVisualSegmentation,
        config_from_official_state_dict,
        convert_state_dict,
        official_state_dict,
        audio_encoder_dir,
        **config_overrides,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="official TPAVI .pth state dict")
    parser.add_argument("--output-dir", required=True, help="folder for the model, its config and processor")
    parser.add_argument(
        "--vggish-dir", help="converted VGGish folder to embed log-mel input inside the model"
    )
    args = parser.parse_args(argv)
    model, dropped = convert_tpavi_checkpoint(load_official_state_dict(args.checkpoint), args.vggish_dir)
    model.save_pretrained(args.output_dir)
    num_frames = 10 if is_semantic_segmentation(model.config) else 5
    processor_for(model.config, image_size=224, num_frames=num_frames).save_pretrained(args.output_dir)
    write_conversion_card(args.output_dir, argv)  # README.md, the model card
    print(
        f"Saved {model.num_parameters():,} parameters and a processor (224x224 frames, {num_frames}-frame clips) "
        f"to {args.output_dir}; dropped {len(dropped)} tensors the official forward never uses "
        "(resnet.layer3_2/layer4_2, path4.resConfUnit1)."
    )


if __name__ == "__main__":
    main()
