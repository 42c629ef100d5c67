"""Convert the public PyTorch VGGish weights (and optionally C3N's AudioSet head) to a Transformers folder.

Inputs:
- `vggish-10086976.pth`: the VGG network, keys `features.N.*` (convolutions) and `embeddings.N.*`
  (fully connected layers);
- `vggish_pca_params-970ea276.pth` (optional): `pca_eigen_vectors` `[128, 128]` and `pca_means`
  (`[128]` or `[128, 1]`), stored as numpy arrays or tensors;
- C3N's AudioSet head (optional, `md_50000_iters.pth`): keys `emb.*`, `attention.*`,
  `bn_attention.*`, `fc_final.*`; requires the PCA parameters, which the head's input goes through.

Output: a `save_pretrained` folder (config, `model.safetensors`, `preprocessor_config.json`) holding a
`VGGishModel`, or a `VGGishForAudioClassification` when a head is given.

    python -m avs_models.models.vggish.convert_vggish_original_to_hf \
        --checkpoint vggish-10086976.pth --pca-checkpoint vggish_pca_params-970ea276.pth \
        --output-dir vggish-hf
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import torch

from ...hub import write_conversion_card
from ..conversion_utils import audioset_labels, load_state_dict_strictly, load_weights_only
from .configuration_vggish import VGGishConfig
from .feature_extraction_vggish import VGGishFeatureExtractor
from .modeling_vggish import VGGishForAudioClassification, VGGishModel

# C3N head key prefix -> our `VGGishClassificationHead` prefix (inside `head.`).
_HEAD_PREFIXES = {
    "emb.bn0.": "input_norm.",
    "emb.conv1.": "convs.0.",
    "emb.conv2.": "convs.1.",
    "emb.conv3.": "convs.2.",
    "emb.bn1.": "norms.0.",
    "emb.bn2.": "norms.1.",
    "emb.bn3.": "norms.2.",
    "attention.att.": "pooling.attention.",
    "attention.cla.": "pooling.values.",
    "bn_attention.": "pooled_norm.",
    "fc_final.": "classifier.",
}


def load_checkpoint(path: str | Path) -> dict:
    """`torch.load(weights_only=True)` of a state dict; accepts `{"state_dict": ...}` wrappers."""
    checkpoint = load_weights_only(path)
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"{path} does not hold a state dict (got {type(checkpoint).__name__})")
    return {key: torch.as_tensor(value) for key, value in checkpoint.items()}


def original_vggish_key_map(config: VGGishConfig) -> dict[str, str]:
    """Original `features.N` / `embeddings.N` prefixes -> ours, following the layer order of the original."""
    mapping = {}
    layer_index = 0
    for stage_index, channels in enumerate(config.stage_channels):
        for conv_index in range(len(channels)):
            mapping[f"features.{layer_index}."] = f"stages.{stage_index}.convs.{conv_index}."
            layer_index += 2  # convolution, ReLU
        layer_index += 1  # max-pool
    for fc_index in range(len(config.hidden_sizes) + 1):
        mapping[f"embeddings.{2 * fc_index}."] = f"fc_layers.{fc_index}."  # linear, ReLU
    return mapping


def _rename(
    state_dict: Mapping[str, torch.Tensor], prefixes: Mapping[str, str], source: str
) -> dict[str, torch.Tensor]:
    renamed = {}
    unexpected = []
    for key, value in state_dict.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            unexpected.append(key)
        else:
            renamed[prefixes[prefix] + key[len(prefix) :]] = value
    if unexpected:
        raise ValueError(f"unexpected keys in {source}: {sorted(unexpected)}")
    return renamed


def convert_vggish_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: VGGishConfig
) -> dict[str, torch.Tensor]:
    """Original VGGish state dict -> `VGGishModel` keys (without the PCA buffers)."""
    return _rename(state_dict, original_vggish_key_map(config), "the VGGish checkpoint")


def convert_pca_state_dict(
    pca_params: Mapping[str, torch.Tensor], config: VGGishConfig
) -> dict[str, torch.Tensor]:
    """PCA parameters -> `postprocessor.*` buffers (float32, means as a column vector)."""
    expected = {"pca_eigen_vectors", "pca_means"}
    if set(pca_params) != expected:
        raise ValueError(
            f"the PCA checkpoint must hold exactly {sorted(expected)}; missing {sorted(expected - set(pca_params))}, "
            f"unexpected {sorted(set(pca_params) - expected)}"
        )
    size = config.embedding_size
    return {
        "postprocessor.pca_eigen_vectors": pca_params["pca_eigen_vectors"]
        .to(torch.float32)
        .reshape(size, size),
        "postprocessor.pca_means": pca_params["pca_means"].to(torch.float32).reshape(size, 1),
    }


def convert_head_state_dict(head_state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """C3N AudioSet head state dict -> `VGGishClassificationHead` keys."""
    return _rename(head_state_dict, _HEAD_PREFIXES, "the classification head checkpoint")


def convert_vggish_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    pca_checkpoint_path: str | Path | None = None,
    head_checkpoint_path: str | Path | None = None,
    labels_csv: str | Path | None = None,
    postprocess: bool = False,
) -> VGGishModel | VGGishForAudioClassification:
    """Convert and `save_pretrained` to `output_dir`; returns the converted model (eval mode)."""
    if postprocess and pca_checkpoint_path is None:
        raise ValueError("`postprocess=True` needs the PCA parameters: pass `pca_checkpoint_path`")
    if head_checkpoint_path is not None and pca_checkpoint_path is None:
        raise ValueError(
            "the classification head reads PCA-processed embeddings: pass `pca_checkpoint_path` too"
        )
    if labels_csv is not None and head_checkpoint_path is None:
        raise ValueError("`labels_csv` only applies with a classification head (`head_checkpoint_path`)")

    head_state_dict = None
    config_kwargs = {"postprocess": postprocess}
    if head_checkpoint_path is not None:
        head_state_dict = convert_head_state_dict(load_checkpoint(head_checkpoint_path))
        if "classifier.weight" not in head_state_dict:
            raise ValueError("missing key in the classification head checkpoint: fc_final.weight")
        num_labels = head_state_dict["classifier.weight"].shape[0]
        id2label = audioset_labels(num_labels, labels_csv)
        config_kwargs.update({"id2label": id2label} if id2label is not None else {"num_labels": num_labels})
    config = VGGishConfig(**config_kwargs)

    encoder_state_dict = convert_vggish_state_dict(load_checkpoint(checkpoint_path), config)
    if pca_checkpoint_path is not None:
        encoder_state_dict.update(convert_pca_state_dict(load_checkpoint(pca_checkpoint_path), config))
    else:
        # Identity PCA: post-processing stays defined, but it is not the published transform.
        encoder_state_dict["postprocessor.pca_eigen_vectors"] = torch.eye(config.embedding_size)
        encoder_state_dict["postprocessor.pca_means"] = torch.zeros(config.embedding_size, 1)

    if head_state_dict is None:
        model = VGGishModel(config)
        state_dict = encoder_state_dict
    else:
        model = VGGishForAudioClassification(config)
        state_dict = {f"vggish.{key}": value for key, value in encoder_state_dict.items()}
        state_dict.update({f"head.{key}": value for key, value in head_state_dict.items()})
    load_state_dict_strictly(model, state_dict)
    model.eval()

    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    VGGishFeatureExtractor().save_pretrained(output_dir)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", required=True, help="vggish-10086976.pth (features.* / embeddings.* keys)"
    )
    parser.add_argument("--output-dir", required=True, help="folder to write the converted model to")
    parser.add_argument(
        "--pca-checkpoint", help="vggish_pca_params-970ea276.pth (pca_eigen_vectors, pca_means)"
    )
    parser.add_argument(
        "--head-checkpoint",
        help="C3N's AudioSet head (md_50000_iters.pth): writes VGGishForAudioClassification",
    )
    parser.add_argument("--labels-csv", help="AudioSet class_labels_indices.csv, for id2label of the head")
    parser.add_argument(
        "--postprocess",
        action="store_true",
        help="make VGGishModel return post-processed embeddings by default",
    )
    args = parser.parse_args(argv)
    model = convert_vggish_checkpoint(
        args.checkpoint,
        args.output_dir,
        pca_checkpoint_path=args.pca_checkpoint,
        head_checkpoint_path=args.head_checkpoint,
        labels_csv=args.labels_csv,
        postprocess=args.postprocess,
    )
    write_conversion_card(args.output_dir, argv)  # README.md, the model card
    print(f"saved {type(model).__name__} to {args.output_dir}")


if __name__ == "__main__":
    main()
