"""Image transforms for audio-visual segmentation, written with torch only (no torchvision).

Frames are float tensors `[T, 3, H, W]` in [0, 1] until `normalize`; label maps are `[T, H, W]`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_pil(image) -> Image.Image:
    """A PIL image from a PIL image, a `datasets` image dict (`bytes`/`path`), a path or an array."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, dict):
        source = image.get("bytes")
        image = io.BytesIO(source) if source is not None else image.get("path")
        if image is None:
            raise ValueError("image dict has neither 'bytes' nor 'path'")
        return Image.open(image)
    if isinstance(image, (str, Path)):
        return Image.open(image)
    if isinstance(image, np.ndarray):
        return Image.fromarray(image)
    raise TypeError(f"expected a PIL image, an image dict, a path or an array, got {type(image).__name__}")


def images_to_tensor(images) -> torch.Tensor:
    """RGB images (anything `to_pil` takes) of one size -> float `[T, 3, H, W]` in [0, 1]."""
    arrays = [np.asarray(to_pil(image).convert("RGB")) for image in images]
    if len({array.shape for array in arrays}) != 1:
        raise ValueError(f"all frames of a clip must have one size, got {sorted({a.shape for a in arrays})}")
    # Contiguous [T, 3, H, W]: a permuted (channels-last) batch gives 1x1 convolution weights
    # gradients with channels-last strides, which DDP reports as "Grad strides do not match".
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous().float().div_(255)


def resize_frames(frames: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of `[T, 3, H, W]` frames to `size` (int for square, or (height, width))."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(frames.shape[-2:]) == size:
        return frames
    return F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)


def resize_labels(labels: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of label maps `[T, H, W]` (any dtype) to `size`."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(labels.shape[-2:]) == size:
        return labels
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].to(labels.dtype)


def normalize(frames: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Per-channel `(x - mean) / std` for `[..., 3, H, W]` frames."""
    mean = torch.tensor(mean, dtype=frames.dtype).view(3, 1, 1)
    std = torch.tensor(std, dtype=frames.dtype).view(3, 1, 1)
    return (frames - mean) / std


def _grayscale(frames: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=frames.dtype).view(3, 1, 1)
    return (frames * weights).sum(dim=-3, keepdim=True)


def color_jitter(frames: torch.Tensor, brightness: float, contrast: float, saturation: float) -> torch.Tensor:
    """Scale brightness, contrast and saturation of `[T, 3, H, W]` frames in [0, 1] by the given factors."""
    frames = (frames * brightness).clamp(0, 1)
    mean = _grayscale(frames).mean(dim=(-3, -2, -1), keepdim=True)
    frames = (mean + contrast * (frames - mean)).clamp(0, 1)
    gray = _grayscale(frames)
    return (gray + saturation * (frames - gray)).clamp(0, 1)


@dataclass
class TrainAugmentation:
    """The papers' training augmentation: random colour jitter and horizontal flip of a whole clip.

    One draw per clip: every frame gets the same jitter factors, and a flip mirrors the frames and
    their label maps together. Factors are drawn uniformly from `[1 - x, 1 + x]`. Pass a seeded
    `torch.Generator` for reproducible draws.
    """

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    flip_probability: float = 0.5

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.flip_probability <= 1:
            raise ValueError(f"flip_probability must lie in [0, 1], got {self.flip_probability}")

    def __call__(
        self, frames: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        draws = torch.rand(4, generator=generator).tolist()
        factors = [
            1 + x * (2 * u - 1) for x, u in zip((self.brightness, self.contrast, self.saturation), draws)
        ]
        frames = color_jitter(frames, *factors)
        if draws[3] < self.flip_probability:
            frames, labels = frames.flip(-1), labels.flip(-1)
        return frames, labels
