"""Convert an official C3N checkpoint (ZhaofengSHI/AVS-C3N, PVT-v2 or Swin; VGGish, PANNs or
BEATs audio width) to a `C3NForAudioVisualSegmentation` folder.

    python -m avs_models.models.c3n.convert_c3n_original_to_hf \
        --checkpoint C3N_PVT_vggish_s4.pth --output-dir c3n-pvtv2b5-vggish-s4 \
        --similarity-matrix similarity_matrix.h5 --audio-encoder-dir vggish-audioset
"""

from __future__ import annotations

import argparse
import math
import re
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForAudioClassification

from ...hub import write_conversion_card
from ..backbones import (
    convert_official_pvt_v2_state_dict,
    convert_official_swin_state_dict,
    pvt_v2_b5_backbone_config,
    swin_base_backbone_config,
)
from ..conversion_utils import load_state_dict_strictly, load_weights_only
from ..panns.configuration_panns import PannsConfig
from .configuration_c3n import C3NConfig
from .label_similarity import load_official_similarity_matrix
from .modeling_c3n import C3NForAudioVisualSegmentation

BACKBONE_PREFIX = "encoder_backbone."
_ASPP_NAMES = {
    "conv": "image_pool_conv",
    "atrous_block1": "pointwise_conv",
    "atrous_block6": "atrous_convs.0",
    "atrous_block12": "atrous_convs.1",
    "atrous_block18": "atrous_convs.2",
    "conv_1x1_output": "projection",
}
_NON_LOCAL_NAMES = {
    "align_channel": "audio_projection",
    "norm_layer": "layer_norm",
    "theta": "query",
    "phi": "key",
    "g": "value",
    "W_z.0": "output",
    "W_z.1": "output_norm",
}
_HEAD_NAMES = {"0": "conv1", "2": "conv2", "4": "classifier"}
_PATTERNS = {
    "aspp": re.compile(r"^conv(\d)\.([a-z_0-9]+)\.(.+)$"),
    "decoder": re.compile(r"^path(\d)\.resConfUnit(\d)\.(conv\d)\.(.+)$"),
    "fusion": re.compile(r"^tpavi_(\d)\.(align_channel|norm_layer|theta|phi|g|W_z\.\d)\.(.+)$"),
    "head": re.compile(r"^output_conv\.(\d)\.(.+)$"),
}


def backbone_config_from_state_dict(backbone_state: dict[str, torch.Tensor]):
    """PVT-v2 or Swin config matching the official backbone weights (depths and widths from shapes)."""
    if "patch_embed1.proj.weight" in backbone_state:
        depths = [
            1 + max(int(k.split(".")[1]) for k in backbone_state if k.startswith(f"block{s}."))
            for s in range(1, 5)
        ]
        widths = [backbone_state[f"patch_embed{s}.proj.weight"].shape[0] for s in range(1, 5)]
        return pvt_v2_b5_backbone_config(depths=depths, hidden_sizes=widths)
    if "patch_embed.proj.weight" in backbone_state:
        depths = [
            1 + max(int(k.split(".")[3]) for k in backbone_state if k.startswith(f"layers.{s}.blocks."))
            for s in range(4)
        ]
        heads = [
            backbone_state[f"layers.{s}.blocks.0.attn.relative_position_bias_table"].shape[1]
            for s in range(4)
        ]
        table_size = backbone_state["layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
        window = (math.isqrt(table_size) + 1) // 2
        embed_dim = backbone_state["patch_embed.proj.weight"].shape[0]
        return swin_base_backbone_config(
            embed_dim=embed_dim, depths=depths, num_heads=heads, window_size=window
        )
    raise KeyError("checkpoint has neither a PVT-v2 (patch_embed1) nor a Swin (patch_embed) backbone")


def _convert_head_key(key: str) -> str | None:
    """Our name for a non-backbone official key; `None` for the unused skip unit of `path4`."""
    match = _PATTERNS["aspp"].match(key)
    if match and match.group(2) in _ASPP_NAMES:
        return f"aspp.{int(match.group(1)) - 1}.{_ASPP_NAMES[match.group(2)]}.{match.group(3)}"
    match = _PATTERNS["decoder"].match(key)
    if match:
        stage, unit = int(match.group(1)), match.group(2)
        if stage == 4 and unit == "1":
            return None  # the official deepest fusion block owns a skip unit its forward never calls
        name = "skip_unit" if unit == "1" else "output_unit"
        return f"decoder.{stage - 1}.{name}.{match.group(3)}.{match.group(4)}"
    match = _PATTERNS["fusion"].match(key)
    if match:
        return f"fusion.{int(match.group(1)) - 1}.{_NON_LOCAL_NAMES[match.group(2)]}.{match.group(3)}"
    match = _PATTERNS["head"].match(key)
    if match and match.group(1) in _HEAD_NAMES:
        return f"head.{_HEAD_NAMES[match.group(1)]}.{match.group(2)}"
    raise KeyError(f"Unexpected key in official C3N checkpoint: {key!r}")


def convert_c3n_state_dict(
    official: dict[str, torch.Tensor], **config_overrides
) -> tuple[C3NConfig, dict[str, torch.Tensor]]:
    """Config (the checkpoint's sizes plus `config_overrides`) and `C3NForAudioVisualSegmentation`
    state dict for an official C3N state dict."""
    official = {key.removeprefix("module."): tensor for key, tensor in official.items()}
    backbone_state = {
        k[len(BACKBONE_PREFIX) :]: v for k, v in official.items() if k.startswith(BACKBONE_PREFIX)
    }
    backbone_config = backbone_config_from_state_dict(backbone_state)
    if backbone_config.model_type == "pvt_v2":
        converted = {
            "backbone." + k: v for k, v in convert_official_pvt_v2_state_dict(backbone_state).items()
        }
    else:
        converted = {"backbone." + k: v for k, v in convert_official_swin_state_dict(backbone_state).items()}
    converted["visual_classifier.weight"] = backbone_state["head.weight"]
    converted["visual_classifier.bias"] = backbone_state["head.bias"]
    for key, tensor in official.items():
        if key.startswith(BACKBONE_PREFIX):
            continue
        new_key = _convert_head_key(key)
        if new_key is None:
            continue
        if tensor.dim() == 5:  # 1x1x1 Conv3d of the non-local block -> Linear over channels
            tensor = tensor.flatten(1)
        converted[new_key] = tensor
    config = C3NConfig(
        backbone_config=backbone_config,
        num_visual_classes=backbone_state["head.weight"].shape[0],
        audio_embed_dim=official["tpavi_1.align_channel.weight"].shape[1],
        hidden_size=official["conv1.conv.weight"].shape[0],
        **config_overrides,
    )
    return config, converted


def swin_relative_position_indices(model: C3NForAudioVisualSegmentation) -> dict[str, torch.Tensor]:
    """The Swin backbone's relative-position index buffers (flat), under their official key names."""
    indices = {}
    for stage, layer in enumerate(model.backbone.swin.encoder.layers):
        for block_index, block in enumerate(layer.blocks):
            key = f"{BACKBONE_PREFIX}layers.{stage}.blocks.{block_index}.attn.relative_position_index"
            indices[key] = block.attention.relative_position_bias.relative_position_index
    return indices


def _warn_on_nonstandard_swin_indices(official: dict[str, torch.Tensor], model) -> None:
    """Transformers recomputes the (non-persistent) index buffers; say so if the checkpoint's differ."""
    for key, index in swin_relative_position_indices(model).items():
        if key in official and not torch.equal(official[key].flatten().to(index), index):
            warnings.warn(
                f"{key} in the checkpoint differs from the standard Swin relative-position index that "
                "Transformers recomputes; the converted model uses the standard one",
                stacklevel=3,
            )
            return


def load_converted_model(
    official: dict[str, torch.Tensor],
    similarity_matrix: torch.Tensor | None = None,
    audio_encoder_dir: str | Path | None = None,
) -> C3NForAudioVisualSegmentation:
    """Build the model, load the converted weights (every key must match) and the similarity matrix.

    The official models take audio embeddings and logits; with `audio_encoder_dir` (a converted
    VGGish-with-AudioSet-head, PANNs or BEATs folder) the model computes them from raw audio.
    """
    audio_encoder = (
        AutoModelForAudioClassification.from_pretrained(audio_encoder_dir) if audio_encoder_dir else None
    )
    audio_overrides = {}
    if audio_encoder is not None:
        audio_overrides = {
            "audio_config": audio_encoder.config,
            # C3N_panns fed Cnn14's sigmoid outputs (clipwise_output) to the consensus.
            "audio_score_activation": "sigmoid"
            if audio_encoder.config.model_type == PannsConfig.model_type
            else "none",
        }
    config, converted = convert_c3n_state_dict(official, **audio_overrides)
    if audio_encoder is not None:
        converted.update({f"audio_encoder.{k}": v for k, v in audio_encoder.state_dict().items()})
    model = C3NForAudioVisualSegmentation(config)
    expected = model.state_dict()
    # Transformers' Swin keeps a final classification norm that the backbone never applies.
    unused = {key for key in expected if key.startswith("backbone.swin.layernorm.")}
    for key in unused - converted.keys():
        converted[key] = expected[key]
    converted["label_similarity"] = (
        similarity_matrix if similarity_matrix is not None else expected["label_similarity"]
    )
    load_state_dict_strictly(model, converted)
    if config.backbone_config.model_type == "swin":
        _warn_on_nonstandard_swin_indices({k.removeprefix("module."): v for k, v in official.items()}, model)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="official C3N .pth state dict")
    parser.add_argument("--output-dir", required=True, type=Path, help="folder for save_pretrained")
    parser.add_argument(
        "--similarity-matrix",
        type=Path,
        help="official similarity_matrix.h5 (ImageNet x AudioSet) to store in the model; without it the "
        "matrix is computed from the class names with sentence-transformers",
    )
    parser.add_argument(
        "--audio-encoder-dir",
        type=Path,
        help="converted audio classifier folder (VGGish with AudioSet head, PANNs or BEATs) to embed in the model",
    )
    args = parser.parse_args(argv)
    official = load_weights_only(args.checkpoint)
    if isinstance(official, dict) and "state_dict" in official:
        official = official["state_dict"]
    similarity = load_official_similarity_matrix(args.similarity_matrix) if args.similarity_matrix else None
    model = load_converted_model(official, similarity, args.audio_encoder_dir)
    if similarity is None:
        # Without the authors' matrix, embed the heads' class names (ImageNet-1k, AudioSet).
        model.compute_label_similarity_from_names()
    model.save_pretrained(args.output_dir)
    write_conversion_card(args.output_dir, argv)  # README.md, the model card
    print(f"saved {type(model).__name__} ({model.config.backbone_config.model_type}) to {args.output_dir}")


if __name__ == "__main__":
    main()
