"""Loss pieces shared by the segmentation models: which frames count, and per-frame losses.

Every model takes `labels (B, T, H, W)` with optional `labeled_frames (B, T)` (S4 training: the
first frame only) and `frame_mask (B, T)` (padding frames); a frame counts in a loss when it is
labelled and real. Per-frame losses are then averaged (or summed) with those weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .inputs import check_shape
from .labels import IGNORE_INDEX


def labelled_frame_weights(
    batch: int,
    num_frames: int,
    labeled_frames: torch.Tensor | None,
    frame_mask: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor:
    """`(B * T,)` float32 weights: 1 for a labelled, real frame, else 0.

    Raises:
        ValueError: a mask of the wrong shape, or no frame left (outside `torch.compile` tracing).
    """
    weights = torch.ones(batch, num_frames, device=device)
    for name, flags in (("labeled_frames", labeled_frames), ("frame_mask", frame_mask)):
        if flags is not None:
            check_shape(name, flags, (batch, num_frames))
            weights = weights * flags.to(weights)
    weights = weights.flatten()
    if not torch.compiler.is_compiling() and not bool(weights.any()):
        raise ValueError("No labelled frame in the batch: `labeled_frames` * `frame_mask` is all zero.")
    return weights


def per_frame_cross_entropy(frame_logits: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each frame `(N, L, H, W)` against class ids `(N, H, W)`, shape `(N,)`: the
    official AVSS per-frame mean over all the frame's pixels, where pixels labelled `IGNORE_INDEX`
    add nothing (the official data has none)."""
    pixel_losses = F.cross_entropy(frame_logits, class_ids, ignore_index=IGNORE_INDEX, reduction="none")
    return pixel_losses.mean(dim=(1, 2))


__all__ = ["labelled_frame_weights", "per_frame_cross_entropy"]
