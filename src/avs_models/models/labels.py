"""What ground-truth masks mean, in one place: the models' losses, the metric functions and the
`evaluate` module all check their labels here.

- Binary masks (S4, MS3): values in {0, 1} (any integer, float or bool dtype). Masks saved as
  0/255 images are converted only by `binary_mask_from_255`, which the callers offer as a
  documented option (`mask_values="0/255"`); anything else is refused.
- Class maps (AVSS): class ids in `[0, num_labels)`, plus `ignore_index` (255 by default, as the
  official AVSS code), which losses and metrics skip.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = 255
MASK_VALUE_CONVENTIONS = ("0/1", "0/255")


def _found_values(values: torch.Tensor, limit: int = 8) -> str:
    unique = torch.unique(values.detach().cpu())
    shown = ", ".join(f"{value:g}" for value in unique[:limit].tolist())
    return shown + (f", ... ({len(unique)} distinct)" if len(unique) > limit else "")


def check_binary_mask(name: str, mask: torch.Tensor, mask_values: str = "0/1") -> torch.Tensor:
    """Check a binary ground truth and return it as a {0, 1} tensor of its own dtype (bool stays bool).

    Args:
        name: the argument's name, for the error message.
        mask: labels of any shape.
        mask_values: `"0/1"` (default) or `"0/255"`, the convention of saved mask images, which is
            converted to 0/1 here.

    Raises:
        ValueError: a value outside the convention (NaN included), naming `name` and the values found.
    """
    if mask_values not in MASK_VALUE_CONVENTIONS:
        raise ValueError(f"`mask_values` must be one of {MASK_VALUE_CONVENTIONS}, got {mask_values!r}")
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype == torch.bool:
        if mask_values == "0/255":
            raise ValueError(f"`{name}` is boolean, so it cannot hold 0/255 values: use mask_values='0/1'")
        return mask
    allowed = (0, 1) if mask_values == "0/1" else (0, 255)
    valid = (mask == allowed[0]) | (mask == allowed[1])
    if not bool(valid.all()):
        hint = (
            " (0/255 masks: pass mask_values='0/255')"
            if mask_values == "0/1" and bool(((mask == 0) | (mask == 255)).all())
            else ""
        )
        raise ValueError(
            f"`{name}` must be a binary mask with values {allowed[0]}/{allowed[1]}; found values "
            f"{_found_values(mask[~valid])}{hint}"
        )
    return mask if mask_values == "0/1" else (mask == 255).to(mask.dtype)


def check_class_map(
    name: str, class_map: torch.Tensor, num_labels: int, ignore_index: int | None = IGNORE_INDEX
) -> torch.Tensor:
    """Check a class-id ground truth and return it as int64.

    Ids must lie in `[0, num_labels)` or equal `ignore_index` (pixels every loss and metric skips).

    Raises:
        ValueError: a non-integer value or an id out of range, naming `name` and the values found.
    """
    if not isinstance(class_map, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(class_map).__name__}")
    if class_map.is_floating_point():
        whole = class_map == class_map.round()
        if not bool(whole.all()):
            raise ValueError(f"`{name}` must hold whole class ids; found values {_found_values(class_map[~whole])}")
    class_map = class_map.long()
    valid = (class_map >= 0) & (class_map < num_labels)
    if ignore_index is not None:
        valid |= class_map == ignore_index
    if not bool(valid.all()):
        ignored = f" or the ignore index {ignore_index}" if ignore_index is not None else ""
        raise ValueError(
            f"`{name}` must hold class ids in [0, {num_labels}){ignored}; found {_found_values(class_map[~valid])}"
        )
    return class_map


def is_semantic_segmentation(config) -> bool:
    """Whether a segmentation model predicts class maps (AVSS, `num_labels > 1`: argmax over classes)
    or binary masks (S4, MS3, C3N, `num_labels == 1`: sigmoid of one logit). The one place that
    decides it: the pipeline, `avs-models predict`, the evaluator and the post-processing all ask here."""
    num_labels = getattr(config, "num_labels", None)
    if not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"the model config must set `num_labels` to a positive integer, got {num_labels!r}")
    return num_labels > 1


__all__ = [
    "IGNORE_INDEX",
    "MASK_VALUE_CONVENTIONS",
    "check_binary_mask",
    "check_class_map",
    "is_semantic_segmentation",
]
