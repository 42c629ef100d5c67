"""Helpers shared by the conversion scripts: safe checkpoint reading, strict loading, AudioSet names."""

from __future__ import annotations

import csv
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel

from .label_names import AUDIOSET_CLASS_IDS, AUDIOSET_CLASSES

# Public releases pickle numpy arrays and scalars next to their tensors (VGGish's PCA parameters,
# the data-sampler state of PANNs training checkpoints); these data-only numpy constructors are
# allowed in weights-only loading (both the numpy 1 and numpy 2 module paths where they moved).
NUMPY_SAFE_GLOBALS = [
    np._core.multiarray._reconstruct,
    (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    np._core.multiarray.scalar,
    (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
    np.ndarray,
    np.dtype,
    np.dtypes.Float64DType,
    np.dtypes.Float32DType,
    np.dtypes.Int64DType,
    np.dtypes.Int32DType,
    np.dtypes.UInt32DType,
]


def load_weights_only(path: str | Path):
    """`torch.load(path, weights_only=True)` on CPU, with the numpy data types above allowed.

    A missing file raises `FileNotFoundError`; an object that weights-only loading refuses (code, not
    data) raises `ValueError`; both name the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds objects that weights-only loading refuses (not tensors or plain data): {error}"
        ) from error


def read_audioset_labels(path: str | Path) -> dict[int, str]:
    """`class_labels_indices.csv` (columns index, mid, display_name) -> `{index: display_name}`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"index", "display_name"} <= set(rows[0]):
        raise ValueError(f"{path} must be a CSV with `index` and `display_name` columns")
    return {int(row["index"]): row["display_name"] for row in rows}


def audioset_labels(
    num_labels: int, labels_csv: str | Path | None = None, class_ids: Mapping[int, str] | None = None
) -> dict[int, str] | None:
    """`id2label` of an AudioSet classifier with `num_labels` classes: the names in `labels_csv`
    when given; else the bundled ontology names, in index order or, when the checkpoint names its
    classes by AudioSet machine id (`class_ids`, index -> mid), through those ids; else None."""
    if labels_csv is not None:
        id2label = read_audioset_labels(labels_csv)
    elif class_ids is not None:
        names_by_id = dict(zip(AUDIOSET_CLASS_IDS, AUDIOSET_CLASSES))
        id2label = {int(index): names_by_id.get(str(mid), str(mid)) for index, mid in class_ids.items()}
    elif num_labels == len(AUDIOSET_CLASSES):
        return dict(enumerate(AUDIOSET_CLASSES))
    else:
        return None
    if sorted(id2label) != list(range(num_labels)):
        source = labels_csv if labels_csv is not None else "the checkpoint's class ids"
        raise ValueError(f"{source} names {len(id2label)} classes but the classifier has {num_labels}")
    return id2label


def load_state_dict_strictly(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """`load_state_dict(strict=True)` with one error listing every missing, unexpected and mis-shaped key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in state_dict.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"checkpoint does not fit the model: missing {missing}, unexpected {unexpected}, shape mismatches {mismatched}"
        )
    model.load_state_dict(state_dict, strict=True)


def read_official_state_dict(
    path: str | Path, described_as: str, wrappers: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """Read an official `.pth` safely: the mapping of names to tensors that the train scripts save
    (`model.module.state_dict()`), with the `module.` prefix of a DataParallel-wrapped save stripped.

    `wrappers` are keys (such as `"state_dict"`) under which some releases nest that mapping. Anything
    else raises `ValueError` saying the file does not hold `described_as` (e.g. "a TPAVI state dict").
    """
    checkpoint = load_weights_only(path)
    for wrapper in wrappers:
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} does not hold {described_as} (a mapping of names to tensors)")
    return {key.removeprefix("module."): tensor for key, tensor in checkpoint.items()}


def build_converted_model(
    model_class: type[torch.nn.Module],
    config_from_official_state_dict: Callable,
    convert_state_dict: Callable,
    official_state_dict: dict[str, torch.Tensor],
    audio_encoder_dir: str | Path | None = None,
    **config_overrides,
):
    """Our model (eval mode) with every tensor from an official state dict; returns it and the dropped keys.

    For models whose official code takes VGGish embeddings: with `audio_encoder_dir` (a converted
    VGGish folder) the model also holds that encoder and embeds log-mel `input_features` itself. A
    missing, leftover or mis-shaped tensor raises `ValueError` listing them.
    """
    audio_encoder = AutoModel.from_pretrained(audio_encoder_dir) if audio_encoder_dir else None
    if audio_encoder is not None:
        config_overrides["audio_config"] = audio_encoder.config
    model = model_class(config_from_official_state_dict(official_state_dict, **config_overrides))
    converted, dropped = convert_state_dict(official_state_dict)
    if audio_encoder is not None:
        converted.update({f"audio_encoder.{key}": value for key, value in audio_encoder.state_dict().items()})
    load_state_dict_strictly(model, converted)
    return model.eval(), dropped
