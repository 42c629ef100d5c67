"""Reading clips for AVS: one frame per second and the audio track of a video (PyAV), or frames + a wav."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class DecodedClip:
    """Frames sampled once per second and the audio of a clip.

    Attributes:
        frames: `[H, W, 3]` uint8 RGB arrays, frame `k` taken at `frame_times[k]`.
        frame_times: presentation time (s) of each chosen frame.
        waveform: mono float32 waveform.
        sampling_rate: rate of `waveform` in Hz.
        video_duration: seconds of video (`None` when the frames did not come from a video).
    """

    frames: list[np.ndarray]
    frame_times: list[float]
    waveform: np.ndarray
    sampling_rate: int
    video_duration: float | None = None

    @property
    def audio_duration(self) -> float:
        return len(self.waveform) / self.sampling_rate


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as error:
        raise ValueError(f"cannot read video file {path}: {error}") from error


def read_video(path: str | Path, frame_time: float = 1.0, sampling_rate: int = 16000) -> DecodedClip:
    """Decode a video file: frame `k` is the last frame shown before time `k + frame_time` seconds.

    `frame_time=1.0` takes the frame at the end of each second, as AVSBench does. The audio track
    is resampled (by FFmpeg) to `sampling_rate` mono float.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded, or has no video or no audio stream.
    """
    path = Path(path)
    if not 0.0 < frame_time <= 1.0:
        raise ValueError(f"`frame_time` must lie in (0, 1] seconds, got {frame_time}")
    with _open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        if not container.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        try:
            frames, frame_times, video_duration = _sample_frames(container, frame_time)
        except av.error.FFmpegError as error:
            raise ValueError(f"cannot decode the video stream of {path}: {error}") from error
    with _open(path) as container:
        try:
            waveform = _decode_audio(container, sampling_rate)
        except av.error.FFmpegError as error:
            raise ValueError(f"cannot decode the audio stream of {path}: {error}") from error
    if not frames:
        raise ValueError(f"{path} holds less than one second of video")
    return DecodedClip(frames, frame_times, waveform, sampling_rate, video_duration)


def _sample_frames(container, frame_time: float) -> tuple[list[np.ndarray], list[float], float]:
    stream = container.streams.video[0]
    frame_period = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0
    chosen, chosen_times = [], []
    previous = previous_time = None
    last_time = -1.0
    for frame in container.decode(stream):
        time = float(frame.time)
        # Every target time passed by this frame gets the frame shown just before it.
        while previous is not None and time >= len(chosen) + frame_time - 1e-6:
            chosen.append(previous)
            chosen_times.append(previous_time)
        previous, previous_time = frame.to_ndarray(format="rgb24"), time
        last_time = time
    duration = last_time + frame_period
    # Targets inside the video but after its last frame start.
    while previous is not None and len(chosen) + frame_time <= duration + 1e-6:
        chosen.append(previous)
        chosen_times.append(previous_time)
    return chosen, chosen_times, duration


def _decode_audio(container, sampling_rate: int) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
    chunks = []
    for frame in container.decode(container.streams.audio[0]):
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
    chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, dtype=np.float32)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def read_frame_folder(folder: str | Path) -> list[np.ndarray]:
    """RGB frames of a folder of images, in natural file-name order (`2.png` before `10.png`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    if not paths:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return [np.asarray(Image.open(path).convert("RGB")) for path in paths]


def read_audio_file(path: str | Path) -> tuple[np.ndarray, int]:
    """A sound file (wav, flac, ...) as a float32 waveform (`[samples]` or `[samples, channels]`) and its rate."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        waveform, sampling_rate = soundfile.read(str(path), dtype="float32")
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise ValueError(f"cannot read audio file {path}: {error}") from error
    return waveform, int(sampling_rate)


__all__ = ["DecodedClip", "read_audio_file", "read_frame_folder", "read_video"]
