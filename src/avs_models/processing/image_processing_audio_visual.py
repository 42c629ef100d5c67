"""Image processor for AVS frames: resize to a fixed size and normalise, remembering the original sizes."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, images_to_tensor, normalize, resize_frames


def frame_to_rgb_array(frame) -> np.ndarray:
    """One RGB frame (PIL image, `[H, W, 3]` array or `[3, H, W]` / `[H, W, 3]` tensor) as uint8 `[H, W, 3]`."""
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu()
        if frame.dim() == 3 and frame.shape[0] == 3 and frame.shape[-1] != 3:
            frame = frame.permute(1, 2, 0)
        frame = frame.numpy()
    if isinstance(frame, np.ndarray):
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(
                f"a frame array must have shape [H, W, 3] (or [3, H, W] as a tensor), got {frame.shape}"
            )
        if np.issubdtype(frame.dtype, np.floating):
            if frame.size and (frame.min() < 0 or frame.max() > 1):
                raise ValueError("float frames must hold values in [0, 1]")
            frame = np.round(frame * 255)
        return frame.astype(np.uint8)
    if hasattr(frame, "convert"):  # PIL image
        return np.asarray(frame.convert("RGB"))
    raise TypeError(
        f"a frame must be a PIL image, a numpy array or a torch tensor, got {type(frame).__name__}"
    )


class AudioVisualImageProcessor(BaseImageProcessor):
    r"""Resizes frames to `size` (bilinear, antialiased) and normalises them with `image_mean` / `image_std`.

    The same transform as the AVSBench data collator of this package, so a model sees the same
    pixels at inference as in training. Frames may have different sizes; each one's original
    `(height, width)` is returned for `post_process_masks`.

    Args:
        size (`dict[str, int] | int`): output size, `{"height": H, "width": W}` or an int for a
            square; 224 x 224 by default.
        image_mean (`list[float]`): per-channel mean; the ImageNet mean by default.
        image_std (`list[float]`): per-channel standard deviation; ImageNet's by default.
        do_normalize (`bool`): whether to normalise after scaling to [0, 1] (default `True`).
    """

    model_input_names: ClassVar[list[str]] = ["pixel_values"]

    def __init__(
        self,
        size: dict[str, int] | int | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        do_normalize: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(size, int):
            size = {"height": size, "width": size}
        size = dict(size or {"height": 224, "width": 224})
        if set(size) != {"height", "width"} or min(size.values()) < 1:
            raise ValueError(f"`size` must be a positive int or {{'height': H, 'width': W}}, got {size}")
        self.size = size
        self.image_mean = list(image_mean if image_mean is not None else IMAGENET_MEAN)
        self.image_std = list(image_std if image_std is not None else IMAGENET_STD)
        self.do_normalize = do_normalize

    def preprocess(self, images: list | object, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Frames -> `pixel_values` `[N, 3, height, width]` and `original_sizes` `[N, 2]` (height, width).

        Args:
            images: one frame or a list of frames (PIL images, uint8 or [0, 1] float arrays
                `[H, W, 3]`, or tensors `[3, H, W]`).
            return_tensors: `"pt"` (default) or `"np"`.
        """
        if kwargs:
            raise TypeError(f"unexpected keyword arguments for {type(self).__name__}: {sorted(kwargs)}")
        frames = list(images) if isinstance(images, (list, tuple)) else [images]
        if not frames:
            raise ValueError("`images` is empty: pass at least one frame")
        arrays = [frame_to_rgb_array(frame) for frame in frames]
        target = (self.size["height"], self.size["width"])
        # Resize each frame on its own: frames of one call may differ in size.
        pixel_values = torch.cat([resize_frames(images_to_tensor([array]), target) for array in arrays])
        if self.do_normalize:
            pixel_values = normalize(pixel_values, self.image_mean, self.image_std)
        original_sizes = torch.tensor([array.shape[:2] for array in arrays], dtype=torch.long)
        return BatchFeature(
            {"pixel_values": pixel_values, "original_sizes": original_sizes}, tensor_type=return_tensors
        )


__all__ = ["AudioVisualImageProcessor"]
