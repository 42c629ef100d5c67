"""Helpers shared by the conversion scripts of the audio encoders (VGGish, PANNs, BEATs)."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

# Public releases pickle numpy arrays next to their tensors; these data-only numpy constructors are
# allowed in weights-only loading (both the numpy 1 and numpy 2 module paths of `_reconstruct`).
NUMPY_SAFE_GLOBALS = [
    np._core.multiarray._reconstruct,
    (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    np.ndarray,
    np.dtype,
    np.dtypes.Float64DType,
    np.dtypes.Float32DType,
]


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
