"""Convert an official BEATs checkpoint (e.g. `BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt`) to a Transformers folder.

The official file is a dict with `cfg` (the fields of the official `BEATsConfig`, plain Python
values), `model` (the state dict) and, for AudioSet-finetuned checkpoints, `label_dict` (class
index -> AudioSet id such as `/m/09x0r`). It holds only tensors and primitives, so it loads with
`torch.load(weights_only=True)`.

Output: a `save_pretrained` folder (config, `model.safetensors`, `preprocessor_config.json`) holding
a `BeatsForAudioClassification` for a finetuned checkpoint (`predictor.*` keys), else a `BeatsModel`.

    python -m avs_models.models.beats.convert_beats_original_to_hf \
        --checkpoint BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt --output-dir beats-hf \
        --labels-csv class_labels_indices.csv
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ...hub import write_conversion_card
from ..conversion_utils import audioset_labels, load_state_dict_strictly, load_weights_only
from .configuration_beats import BeatsConfig
from .feature_extraction_beats import BeatsFeatureExtractor
from .modeling_beats import BeatsForAudioClassification, BeatsModel

# Official key pattern -> `BeatsModel` key (first match wins). `predictor.*` becomes the
# `classifier.*` of `BeatsForAudioClassification`.
ORIGINAL_KEY_PATTERNS = [
    (r"^patch_embedding\.", "patch_embedding.convolution."),
    (r"^layer_norm\.", "patch_embedding.layer_norm."),
    (r"^post_extract_proj\.", "patch_embedding.projection."),
    (r"^encoder\.pos_conv\.0\.weight_g$", "encoder.positional_embedding.weight_magnitude"),
    (r"^encoder\.pos_conv\.0\.weight_v$", "encoder.positional_embedding.weight_direction"),
    (r"^encoder\.pos_conv\.0\.bias$", "encoder.positional_embedding.bias"),
    (r"^encoder\.layer_norm\.", "encoder.layer_norm."),
    # One table shared by all layers; the official state dict repeats it under every layer.
    (
        r"^encoder\.layers\.0\.self_attn\.relative_attention_bias\.",
        "encoder.relative_position_bias.embedding.",
    ),
    (r"^encoder\.layers\.(\d+)\.self_attn\.grep_linear\.", r"encoder.layers.\1.attention.gate_projection."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.grep_a$", r"encoder.layers.\1.attention.gate_scale"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.", r"encoder.layers.\1.attention.\2_proj."),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"encoder.layers.\1.attention_layer_norm."),
    (r"^encoder\.layers\.(\d+)\.(fc1|fc2|final_layer_norm)\.", r"encoder.layers.\1.\2."),
    (r"^predictor\.", "classifier."),
]
_SHARED_POSITION_BIAS = re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight$")


def load_original_checkpoint(path: str | Path) -> dict:
    """`torch.load(weights_only=True)` of an official BEATs checkpoint; checks its `cfg` and `model` entries."""
    checkpoint = load_weights_only(path)
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("model"), Mapping):
        raise TypeError(
            f"{path} is not an official BEATs checkpoint: expected a dict with a `model` state dict"
        )
    if not isinstance(checkpoint.get("cfg"), Mapping):
        raise TypeError(f"{path} has no `cfg` dict (the official BEATsConfig fields)")
    return dict(checkpoint)


def convert_beats_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official state dict -> our keys: `BeatsModel` keys, plus `classifier.*` for the predictor."""
    shared_bias = state_dict.get("encoder.layers.0.self_attn.relative_attention_bias.weight")
    renamed = {}
    unexpected = []
    for key, value in state_dict.items():
        match = _SHARED_POSITION_BIAS.match(key)
        if match and match.group(1) != "0":
            if shared_bias is None or not torch.equal(value, shared_bias):
                raise ValueError(
                    f"{key} differs from encoder.layers.0's copy: the official model shares one relative "
                    "position bias table between all layers"
                )
            continue
        for pattern, replacement in ORIGINAL_KEY_PATTERNS:
            new_key, found = re.subn(pattern, replacement, key)
            if found:
                renamed[new_key] = value
                break
        else:
            unexpected.append(key)
    if unexpected:
        raise ValueError(f"unexpected keys in the BEATs checkpoint: {sorted(unexpected)}")
    return renamed


def convert_beats_checkpoint(
    checkpoint_path: str | Path, output_dir: str | Path, labels_csv: str | Path | None = None
) -> BeatsModel | BeatsForAudioClassification:
    """Convert and `save_pretrained` to `output_dir`; returns the converted model (eval mode).

    Class names come from `labels_csv` (AudioSet `class_labels_indices.csv`) when given, else from
    the checkpoint's `label_dict` (AudioSet machine ids, named through the bundled ontology), else
    AudioSet's for a 527-class predictor, else they stay `LABEL_i`.
    """
    checkpoint = load_original_checkpoint(checkpoint_path)
    state_dict = convert_beats_state_dict(checkpoint["model"])
    has_classifier = "classifier.weight" in state_dict
    if labels_csv is not None and not has_classifier:
        raise ValueError(
            "`labels_csv` only applies to a finetuned checkpoint (one with `predictor.*` weights)"
        )

    config_kwargs = {}
    if has_classifier:
        num_labels = state_dict["classifier.weight"].shape[0]
        label_dict = checkpoint.get("label_dict")
        class_ids = label_dict if isinstance(label_dict, Mapping) else None
        id2label = audioset_labels(num_labels, labels_csv, class_ids) or {
            index: f"LABEL_{index}" for index in range(num_labels)
        }
        config_kwargs["id2label"] = id2label
        config_kwargs["label2id"] = {label: index for index, label in id2label.items()}
    config = BeatsConfig.from_original_config(checkpoint["cfg"], **config_kwargs)

    if has_classifier:
        model = BeatsForAudioClassification(config)
        state_dict = {
            key if key.startswith("classifier.") else f"beats.{key}": value
            for key, value in state_dict.items()
        }
    else:
        model = BeatsModel(config)
    load_state_dict_strictly(model, state_dict)
    model.eval()

    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    BeatsFeatureExtractor(sampling_rate=config.sampling_rate).save_pretrained(output_dir)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", required=True, help="official BEATs .pt file (cfg, model, label_dict)"
    )
    parser.add_argument("--output-dir", required=True, help="folder to write the converted model to")
    parser.add_argument(
        "--labels-csv", help="AudioSet class_labels_indices.csv, for id2label of the classifier"
    )
    args = parser.parse_args(argv)
    model = convert_beats_checkpoint(args.checkpoint, args.output_dir, labels_csv=args.labels_csv)
    write_conversion_card(args.output_dir, argv)  # README.md, the model card
    print(f"saved {type(model).__name__} to {args.output_dir}")


if __name__ == "__main__":
    main()
