"""Overlays of predicted masks on frames, written as PNG frames, an animated GIF or an MP4 with sound (PyAV)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from ..data.avss_classes import avss_palette


def overlay_mask(
    frame: np.ndarray, mask: np.ndarray, alpha: float = 0.5, palette: np.ndarray | None = None
) -> np.ndarray:
    """Blend class colours over an RGB frame `[H, W, 3]` where `mask` `[H, W]` (0/1 or class ids) is non-zero.

    Class `k` gets colour `palette[k]` (the AVSS palette by default: class 1, the binary
    foreground, is dark red); background pixels (0) stay untouched.
    """
    frame = np.asarray(frame)
    mask = np.asarray(mask)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"`frame` must have shape [H, W, 3], got {frame.shape}")
    if mask.shape != frame.shape[:2]:
        raise ValueError(f"`mask` must have the frame's size {frame.shape[:2]}, got {mask.shape}")
    palette = avss_palette(max(int(mask.max()) + 1, 2)) if palette is None else np.asarray(palette)
    colours = palette[mask].astype(np.float32)
    blended = (1 - alpha) * frame.astype(np.float32) + alpha * colours
    return np.where(mask[..., None] > 0, blended, frame).round().astype(np.uint8)


def save_png_frames(overlays: list[np.ndarray], folder: str | Path, prefix: str = "frame") -> list[Path]:
    """Write `prefix_0000.png`, `prefix_0001.png`, ... into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, overlay in enumerate(overlays):
        path = folder / f"{prefix}_{index:04d}.png"
        Image.fromarray(overlay).save(path)
        paths.append(path)
    return paths


def save_gif(overlays: list[np.ndarray], path: str | Path, seconds_per_frame: float = 1.0) -> Path:
    """An animated GIF showing each overlay for `seconds_per_frame`, looping."""
    if not overlays:
        raise ValueError("no frames to write")
    path = Path(path)
    images = [Image.fromarray(overlay) for overlay in overlays]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=int(seconds_per_frame * 1000), loop=0
    )
    return path


def save_mp4(
    overlays: list[np.ndarray],
    path: str | Path,
    waveform: np.ndarray | None = None,
    sampling_rate: int = 16000,
    seconds_per_frame: float = 1.0,
) -> Path:
    """An H.264 MP4 showing each overlay for `seconds_per_frame`, with the mono `waveform` as AAC sound."""
    if not overlays:
        raise ValueError("no frames to write")
    path = Path(path)
    height, width = overlays[0].shape[:2]
    frame_rate = Fraction(1) / Fraction(seconds_per_frame).limit_denominator(1000)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=frame_rate)
        # H.264 with yuv420p needs even sizes.
        video.width, video.height, video.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
        audio = None
        if waveform is not None:
            audio = container.add_stream("aac", rate=sampling_rate, layout="mono")
        for index, overlay in enumerate(overlays):
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(overlay[: video.height, : video.width]), format="rgb24"
            )
            frame.pts, frame.time_base = index, Fraction(1) / frame_rate
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            samples = np.asarray(waveform, dtype=np.float32).reshape(-1)
            chunk = 1024
            for start in range(0, len(samples), chunk):
                frame = av.AudioFrame.from_ndarray(
                    samples[None, start : start + chunk], format="flt", layout="mono"
                )
                frame.sample_rate, frame.pts, frame.time_base = (
                    sampling_rate,
                    start,
                    Fraction(1, sampling_rate),
                )
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
    return path


__all__ = ["overlay_mask", "save_gif", "save_mp4", "save_png_frames"]
