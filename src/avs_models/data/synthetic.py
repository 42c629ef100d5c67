"""A synthetic audio-visual segmentation data set written in the official AVSBench layout.

Every video shows a few objects (each kind has its own shape, texture and colour) that drift a
little from frame to frame over a textured background. Every kind also has its own sound: a low
hum, a high tone, a major chord, a minor chord, low or high band-limited noise, beeps or a chirp.
The audio of second `t` is the sum of the sounds of the objects sounding in that second, and the
ground truth of frame `t` is exactly the visible pixels of those objects. Silent objects are
drawn too, so the frames alone cannot tell which object to segment: the audio decides.

- S4: one sounding object among silent distractors, sounding for the whole clip; the category
  is its kind. Train videos have a mask for the first frame only, like the official release.
- MS3: several objects; which of them sound changes from second to second.
- AVSS: clips of the three label sets (v1s: one source, 5 s; v1m: several, 5 s; v2: several,
  10 s) with colour label maps in the AVSS palette; kind `k` is AVSS class id `k + 1`.

Frames are PNG (S4, MS3) or JPEG (AVSS) files, audio is 16 kHz mono 16-bit wav, and a seed fixes
everything.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from .avsbench import (
    AVSS_CLASS_NAMES,
    NUM_FRAMES,
    SUBSETS,
    SYNTHETIC_CATEGORIES,
    VideoRecord,
    frame_paths,
    mask_paths,
    metadata_path,
    wav_path,
)
from .avss_classes import class_ids_to_color_mask

SAMPLING_RATE = 16000
NUM_KINDS = len(SYNTHETIC_CATEGORIES)
_SUBSET_FOLDERS = {"s4": "Single-source", "ms3": "Multi-sources", "avss": "AVSS"}
_SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross", "ellipse", "hexagon")
_TEXTURES = ("solid", "stripes", "checker", "dots", "stripes", "solid", "checker", "dots")
_COLORS = np.array(
    [
        [230, 60, 50],
        [40, 170, 60],
        [50, 90, 220],
        [240, 200, 40],
        [200, 60, 200],
        [40, 200, 210],
        [250, 140, 30],
        [240, 240, 240],
    ],
    dtype=np.float32,
)


def kind_class_id(kind: int) -> int:
    """The AVSS class id a synthetic object kind is labelled with."""
    return kind + 1


@dataclass(frozen=True)
class SyntheticScene:
    """The visual content of one video: object kinds and their per-frame positions and sizes."""

    kinds: np.ndarray  # [N] int, distinct object kinds
    centers: np.ndarray  # [T, N, 2] float, (x, y) in pixels
    radii: np.ndarray  # [T, N] float, pixels
    background: np.ndarray  # [H, W, 3] uint8

    @property
    def num_frames(self) -> int:
        return self.centers.shape[0]


def sample_scene(
    rng: np.random.Generator, num_frames: int, num_objects: int, image_size: int
) -> SyntheticScene:
    """Place `num_objects` distinct kinds in distinct cells of a 3x3 grid so that they never overlap."""
    if not 1 <= num_objects <= min(NUM_KINDS, 9):
        raise ValueError(f"num_objects must be in [1, {min(NUM_KINDS, 9)}], got {num_objects}")
    kinds = rng.choice(NUM_KINDS, size=num_objects, replace=False)
    cell = image_size / 3
    cells = rng.choice(9, size=num_objects, replace=False)
    start = np.stack([(cells % 3 + 0.5) * cell, (cells // 3 + 0.5) * cell], axis=-1)
    radius = rng.uniform(0.28, 0.38, size=num_objects) * cell
    # A small random drift per object (at most ~4% of the cell per frame) keeps objects in their cell.
    velocity = rng.uniform(-0.04, 0.04, size=(num_objects, 2)) * cell
    steps = np.arange(num_frames)[:, None, None] - (num_frames - 1) / 2
    centers = start[None] + steps * velocity[None]
    radii = radius[None] * (
        1 + 0.03 * np.sin(np.arange(num_frames)[:, None] + rng.uniform(0, 6, num_objects))
    )
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32) / image_size
    base = rng.uniform(40, 120, size=3).astype(np.float32)
    tilt = rng.uniform(-40, 40, size=(2, 3)).astype(np.float32)
    background = (
        base
        + xx[..., None] * tilt[0]
        + yy[..., None] * tilt[1]
        + rng.normal(0, 6, (image_size, image_size, 1))
    )
    return SyntheticScene(kinds, centers, radii, np.clip(background, 0, 255).astype(np.uint8))


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test for a shape in coordinates scaled so the shape fits the unit disc."""
    au, av = np.abs(u), np.abs(v)
    if shape == "circle":
        return u**2 + v**2 <= 1
    if shape == "square":
        return np.maximum(au, av) <= 0.8
    if shape == "triangle":
        return (v <= 0.7) & (v >= 2 * au - 1)
    if shape == "diamond":
        return au + av <= 1
    if shape == "ring":
        return (u**2 + v**2 <= 1) & (u**2 + v**2 >= 0.3)
    if shape == "cross":
        return ((au <= 0.3) & (av <= 1)) | ((av <= 0.3) & (au <= 1))
    if shape == "ellipse":
        return u**2 + (v / 0.55) ** 2 <= 1
    return np.maximum(au * 0.866 + av * 0.5, av) <= 0.9  # hexagon


def _texture(texture: str, xx: np.ndarray, yy: np.ndarray, color: np.ndarray) -> np.ndarray:
    period = 8.0
    if texture == "stripes":
        shade = (np.floor((xx + yy) / period) % 2)[..., None]
    elif texture == "checker":
        shade = ((np.floor(xx / period) + np.floor(yy / period)) % 2)[..., None]
    elif texture == "dots":
        shade = (((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2 < (period / 3) ** 2)[
            ..., None
        ]
    else:
        return np.broadcast_to(color, xx.shape + (3,))
    return color * (1 - 0.45 * shade)


def render_frame(scene: SyntheticScene, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw frame `t`: the RGB image `[H, W, 3]` uint8 and the object index map `[H, W]` (-1 = background)."""
    size = scene.background.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = scene.background.astype(np.float32)
    object_map = np.full((size, size), -1, dtype=np.int64)
    for index, kind in enumerate(scene.kinds):
        (cx, cy), radius = scene.centers[t, index], scene.radii[t, index]
        inside = _shape_mask(_SHAPES[kind], (xx - cx) / radius, (yy - cy) / radius)
        image = np.where(inside[..., None], _texture(_TEXTURES[kind], xx, yy, _COLORS[kind]), image)
        object_map[inside] = index
    return np.clip(image, 0, 255).astype(np.uint8), object_map


def kind_sound(kind: int, rng: np.random.Generator, seconds: int = 1) -> np.ndarray:
    """`seconds` of the sound of one object kind at 16 kHz, peak amplitude about 0.3."""
    time = np.arange(seconds * SAMPLING_RATE) / SAMPLING_RATE
    name = SYNTHETIC_CATEGORIES[kind]

    def tones(*frequencies: float) -> np.ndarray:
        return sum(np.sin(2 * np.pi * f * time + rng.uniform(0, 2 * np.pi)) for f in frequencies) / len(
            frequencies
        )

    def band_noise(low: float, high: float) -> np.ndarray:
        spectrum = np.fft.rfft(rng.normal(size=time.size))
        frequencies = np.fft.rfftfreq(time.size, 1 / SAMPLING_RATE)
        spectrum[(frequencies < low) | (frequencies > high)] = 0
        noise = np.fft.irfft(spectrum, n=time.size)
        return noise / (np.abs(noise).max() + 1e-9)

    if name == "synthetic-low-hum":
        sound = tones(110, 220, 330)
    elif name == "synthetic-high-tone":
        sound = tones(2400)
    elif name == "synthetic-major-chord":
        sound = tones(261.63, 329.63, 392.00)
    elif name == "synthetic-minor-chord":
        sound = tones(440.00, 523.25, 659.25)
    elif name == "synthetic-noise-low":
        sound = band_noise(300, 900)
    elif name == "synthetic-noise-high":
        sound = band_noise(4000, 6500)
    elif name == "synthetic-beeps":
        sound = tones(1200) * ((time * 6) % 1 < 0.5)
    else:  # chirp: 500 Hz to 2000 Hz within every second
        phase = 2 * np.pi * (500 * (time % 1) + 750 * (time % 1) ** 2)
        sound = np.sin(phase)
    return (0.3 * sound).astype(np.float32)


def render_audio(scene: SyntheticScene, sounding: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mix the clip's audio: second `t` is the sum of the sounds of objects with `sounding[t, i]`."""
    sounding = np.asarray(sounding, dtype=bool)
    if sounding.shape != (scene.num_frames, len(scene.kinds)):
        raise ValueError(
            f"sounding must have shape {(scene.num_frames, len(scene.kinds))}, got {sounding.shape}"
        )
    audio = np.zeros(scene.num_frames * SAMPLING_RATE, dtype=np.float32)
    for index, kind in enumerate(scene.kinds):
        sound = kind_sound(int(kind), rng, scene.num_frames)
        gate = np.repeat(sounding[:, index], SAMPLING_RATE).astype(np.float32)
        audio += sound * gate
    audio += rng.normal(0, 0.002, size=audio.shape).astype(
        np.float32
    )  # a faint floor, so no second is digital silence
    return np.clip(audio, -0.99, 0.99)


def sample_sounding(rng: np.random.Generator, mode: str, num_frames: int, num_objects: int) -> np.ndarray:
    """Which objects sound in which second: `[T, N]` bool."""
    if mode == "single":
        sounding = np.zeros((num_frames, num_objects), dtype=bool)
        sounding[:, rng.integers(num_objects)] = True
        return sounding
    # Several sources that change over time: every second has at least one sounding object and
    # the clip uses at least two different objects.
    while True:
        sounding = rng.random((num_frames, num_objects)) < 0.5
        sounding[~sounding.any(axis=1), rng.integers(num_objects)] = True
        if sounding.any(axis=0).sum() >= 2 and len({row.tobytes() for row in sounding}) >= 2:
            return sounding


def _split_of(index: int, num_videos: int) -> str:
    """About 60% train, 20% val, 20% test, with every split non-empty once there are three videos."""
    held_out = max(1, round(0.2 * num_videos)) if num_videos >= 3 else 0
    if index >= num_videos - held_out:
        return "test"
    if index >= num_videos - 2 * held_out:
        return "val"
    return "train"


def _save_image(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        Image.fromarray(array).save(path, quality=92)
    else:
        Image.fromarray(array).save(path, compress_level=1)


def make_synthetic_avsbench(
    out_dir: str | Path,
    subset: str,
    num_videos: int,
    seed: int = 0,
    *,
    image_size: int = 224,
    num_objects: tuple[int, int] = (3, 4),
    progress: bool = False,
) -> Path:
    """Write `num_videos` synthetic videos of `subset` in the official layout under `out_dir`.

    Returns the subset folder (`out_dir/Single-source`, `out_dir/Multi-sources` or
    `out_dir/AVSS`), which `AVSBenchReader(out_dir, subset)` reads.
    """
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    if num_videos < 1:
        raise ValueError(f"num_videos must be at least 1, got {num_videos}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    low, high = num_objects
    if not 2 <= low <= high <= min(NUM_KINDS, 9):
        raise ValueError(f"num_objects must be (low, high) with 2 <= low <= high <= 8, got {num_objects}")
    subset_dir = Path(out_dir) / _SUBSET_FOLDERS[subset]
    subset_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    indices = range(num_videos)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc=f"synthetic {subset}", unit="video")
    for index in indices:
        rng = np.random.default_rng([seed, index])
        split = _split_of(index, num_videos)
        count = int(rng.integers(low, high + 1))
        if subset == "avss":
            group = ("v1s", "v1m", "v2")[index % 3]
            mode = "single" if group == "v1s" else "multi"
        else:
            group, mode = "", "single" if subset == "s4" else "multi"
        scene = sample_scene(rng, NUM_FRAMES[group or subset], count, image_size)
        sounding = sample_sounding(rng, mode, scene.num_frames, count)
        if subset == "s4":
            group = SYNTHETIC_CATEGORIES[int(scene.kinds[sounding[0].argmax()])]
        video_id = f"syn{seed}_{subset}_{index:05d}"
        record = VideoRecord(video_id=video_id, split=split, group=group, line=index + 2)
        _write_video(subset_dir, subset, record, scene, sounding, rng)
        rows.append(record)
    _write_metadata(subset_dir, subset, rows)
    return subset_dir


def _write_video(
    subset_dir: Path, subset: str, record: VideoRecord, scene: SyntheticScene, sounding, rng
) -> None:
    masks = mask_paths(subset_dir, subset, record)
    for t, path in enumerate(frame_paths(subset_dir, subset, record)):
        image, object_map = render_frame(scene, t)
        _save_image(image, path)
        if t not in masks:
            continue
        sounding_pixels = np.isin(object_map, np.flatnonzero(sounding[t]))
        if subset == "avss":
            class_ids = np.where(sounding_pixels, scene.kinds[np.maximum(object_map, 0)] + 1, 0)
            _save_image(class_ids_to_color_mask(class_ids), masks[t])
        else:
            _save_image((sounding_pixels * 255).astype(np.uint8), masks[t])
    path = wav_path(subset_dir, subset, record)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, render_audio(scene, sounding, rng), SAMPLING_RATE, subtype="PCM_16")


def _write_metadata(subset_dir: Path, subset: str, rows: list[VideoRecord]) -> None:
    with open(metadata_path(subset_dir, subset), "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if subset == "s4":
            writer.writerow(["name", "start", "category", "split"])
            writer.writerows([record.video_id, 0, record.group, record.split] for record in rows)
        elif subset == "ms3":
            writer.writerow(["video_id", "split"])
            writer.writerows([record.video_id, record.split] for record in rows)
        else:
            writer.writerow(["uid", "split", "label"])
            writer.writerows([record.video_id, record.split, record.group] for record in rows)
    if subset == "avss":
        # The release's label2idx.json numbers the classes from 1.
        label_to_index = {name: index + 1 for index, name in enumerate(AVSS_CLASS_NAMES)}
        (subset_dir / "label2idx.json").write_text(json.dumps(label_to_index, indent=1))
