"""Real media files for the processor tests: videos encoded with PyAV, wav files and frame folders."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile
from PIL import Image


def frame_brightness(index: int) -> int:
    """Grey level of video frame `index`, so tests can tell which frame was chosen."""
    return (index * 11) % 240 + 8


def tone(
    seconds: float, rate: int, silent_seconds: tuple[int, ...] = (), frequency: float = 440.0
) -> np.ndarray:
    """A sine tone with the listed whole seconds silenced."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * frequency * t)
    for second in silent_seconds:
        wave[second * rate : (second + 1) * rate] = 0.0
    return wave.astype(np.float32)


def write_video(
    path: Path,
    seconds: float,
    fps: int = 4,
    size: tuple[int, int] = (48, 64),
    audio_seconds: float | None = None,
    audio_rate: int = 22050,
    silent_seconds: tuple[int, ...] = (),
    with_video: bool = True,
    with_audio: bool = True,
) -> Path:
    """An mp4 of flat grey frames (brightness from `frame_brightness`) and an AAC tone."""
    height, width = size
    with av.open(str(path), "w") as container:
        video_stream = audio_stream = None
        if with_video:
            video_stream = container.add_stream("libx264", rate=fps)
            video_stream.width, video_stream.height, video_stream.pix_fmt = width, height, "yuv420p"
            video_stream.options = {"crf": "0"}
        if with_audio:
            audio_stream = container.add_stream("aac", rate=audio_rate, layout="mono")
        if video_stream is not None:
            for index in range(round(seconds * fps)):
                image = np.full((height, width, 3), frame_brightness(index), dtype=np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = index, Fraction(1, fps)
                container.mux(video_stream.encode(frame))
            container.mux(video_stream.encode(None))
        if audio_stream is not None:
            wave = tone(seconds if audio_seconds is None else audio_seconds, audio_rate, silent_seconds)
            chunk = 1024
            for start in range(0, len(wave), chunk):
                frame = av.AudioFrame.from_ndarray(
                    wave[None, start : start + chunk], format="flt", layout="mono"
                )
                frame.sample_rate, frame.pts, frame.time_base = audio_rate, start, Fraction(1, audio_rate)
                container.mux(audio_stream.encode(frame))
            container.mux(audio_stream.encode(None))
    return path


def write_frames_and_wav(
    folder: Path, seconds: int, rate: int = 16000, size: tuple[int, int] = (40, 30)
) -> tuple[Path, Path]:
    """A folder of `seconds` PNG frames (named 1.png, 2.png, ..., 10.png) and a matching wav."""
    frames_dir = folder / "frames"
    frames_dir.mkdir(parents=True)
    for index in range(seconds):
        Image.fromarray(np.full((*size, 3), frame_brightness(index), dtype=np.uint8)).save(
            frames_dir / f"{index + 1}.png"
        )
    wav = folder / "audio.wav"
    soundfile.write(wav, tone(seconds, rate), rate, subtype="FLOAT")
    return frames_dir, wav
