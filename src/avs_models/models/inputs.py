"""Input checks shared by the segmentation models' `forward`s (PCMANet, C3N, TPAVI, AVSegFormer).

Every model takes clips as `pixel_values` `(B, T, 3, H, W)` plus per-frame audio and optional
`(B, T)` frame flags; these helpers check them once, the same way, and name the argument in
every message. Checks that read tensor values (finiteness) are skipped while `torch.compile` or
`torch.export` traces the model, where a data-dependent branch would break the graph.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

# The tensors a segmentation model's `forward` takes from a processed or collated batch, in the
# forwards' order; the rest of a batch (labels, labeled frames, video ids) is for losses and metrics.
MODEL_INPUT_NAMES = ("pixel_values", "input_features", "input_values", "audio_embeds", "frame_mask")


def model_inputs(batch: Mapping) -> dict[str, torch.Tensor]:
    """The model inputs of `batch` (see `MODEL_INPUT_NAMES`), ready for `model(**model_inputs(batch))`."""
    return {name: batch[name] for name in MODEL_INPUT_NAMES if name in batch}


def _tracing() -> bool:
    return torch.compiler.is_compiling()


def check_pixel_values(pixel_values: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Check `(B, T, 3, H, W)` normalised frames and return them in `dtype` (the model's own).

    Any floating dtype is accepted and cast (float64 frames would otherwise fail inside the
    first convolution); integer frames are refused, as they are not normalised.

    Raises:
        TypeError: not a tensor, or not floating point.
        ValueError: wrong rank or channel count, an empty batch, clip or frame, or a NaN/inf pixel.
    """
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}")
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"`pixel_values` must be a float tensor of normalised frames, got dtype {pixel_values.dtype} "
            "(AudioVisualProcessor turns uint8 frames into normalised pixel values)"
        )
    if pixel_values.ndim != 5 or pixel_values.shape[2] != 3:
        raise ValueError(f"`pixel_values` must have shape (B, T, 3, H, W), got {tuple(pixel_values.shape)}")
    if pixel_values.numel() == 0:
        raise ValueError(
            f"`pixel_values` is empty (shape {tuple(pixel_values.shape)}): pass at least one clip of at "
            "least one frame"
        )
    check_finite("pixel_values", pixel_values)
    return pixel_values if dtype is None else pixel_values.to(dtype)


def check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...]) -> None:
    """`tensor` must be a tensor of exactly `expected` shape (which matches `pixel_values`' `(B, T, ...)`)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(
            f"`{name}` must have shape {tuple(expected)} to match pixel_values (B, T, ...), got {tuple(tensor.shape)}"
        )


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Refuse NaN or infinite values, which would otherwise turn a whole clip's masks empty."""
    if _tracing() or not tensor.is_floating_point():
        return
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        raise ValueError(
            f"`{name}` holds {int((~finite).sum())} NaN or infinite values (of {tensor.numel()}): "
            "check the decoded frames or audio"
        )


__all__ = ["check_finite", "check_pixel_values", "check_shape"]
