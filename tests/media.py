"""Real media files for the processor tests: videos encoded with PyAV (any container, rotation metadata,
stream offsets, variable frame rates, beeps at chosen seconds), wav files and frame folders."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile
from PIL import Image

# Video and audio codecs per container (what PyAV's bundled FFmpeg encodes).
CODECS = {
    ".mp4": ("libx264", "aac"),
    ".mov": ("libx264", "pcm_s16le"),
    ".mkv": ("libx264", "flac"),
    ".webm": ("libvpx-vp9", "libopus"),
    ".avi": ("mpeg4", "pcm_s16le"),  # AVI leaves the PCM channel order unnamed ("1 channels")
}
AUDIO_FORMATS = {"aac": "fltp", "pcm_s16le": "s16", "flac": "s16", "libopus": "flt", "mp3": "fltp"}


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


def beeps(seconds: float, rate: int, beep_times: tuple[float, ...], start: float = 0.0) -> np.ndarray:
    """Silence with a 1 kHz beep from `t + 0.2` to `t + 0.8` s for each container time `t` in
    `beep_times`, for a stream whose first sample plays at container time `start`."""
    wave = np.zeros(round(seconds * rate), dtype=np.float32)
    for time in beep_times:
        first, last = (round((time + offset - start) * rate) for offset in (0.2, 0.8))
        first, last = max(first, 0), min(last, len(wave))
        wave[first:last] = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(last - first) / rate)
    return wave


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
    frame_times: list[float] | None = None,
    video_start: float = 0.0,
    audio_start: float = 0.0,
    audio: np.ndarray | None = None,
    channels: int = 1,
    rotation: int = 0,
    marker: bool = False,
    sample_aspect_ratio: Fraction | None = None,
    faststart: bool = False,
) -> Path:
    """A video of flat grey frames (frame `i` has brightness `frame_brightness(i)`) and a sound track.

    The container and codecs follow the suffix (`CODECS`). Frames are shown at `frame_times`
    (variable frame rate; the last one lasts until `video_start + seconds`) or every `1 / fps` s,
    from container time `video_start`; the audio (`audio`, by default a 440 Hz tone with
    `silent_seconds`) starts at `audio_start`. `rotation` (degrees counter-clockwise) is stored as
    display-matrix metadata; `marker` paints the top-left corner white, to check orientation.
    `sample_aspect_ratio` stores non-square pixels; `faststart` puts an MP4's index before its data
    (as web videos do), so a truncated copy still opens.
    """
    height, width = size
    video_codec, audio_codec = CODECS[path.suffix]
    if frame_times is None:
        frame_times = [index / fps for index in range(round(seconds * fps))]
    time_base = Fraction(1, 1000)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        video_stream = audio_stream = None
        if with_video:
            video_stream = container.add_stream(video_codec, rate=fps)
            video_stream.width, video_stream.height, video_stream.pix_fmt = width, height, "yuv420p"
            video_stream.codec_context.time_base = time_base
            if video_codec == "libx264":
                video_stream.options = {"crf": "0"}
            if rotation:
                video_stream.set_display_rotation(rotation)
            if sample_aspect_ratio:
                video_stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
        if with_audio:
            layout = {1: "mono", 2: "stereo"}[channels]
            audio_stream = container.add_stream(audio_codec, rate=audio_rate, layout=layout)
        if video_stream is not None:
            ends = [*frame_times[1:], seconds]
            for index, (time, end) in enumerate(zip(frame_times, ends)):
                image = np.full((height, width, 3), frame_brightness(index), dtype=np.uint8)
                if marker:
                    image[: height // 4, : width // 4] = 255
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = round((video_start + time) * 1000), time_base
                frame.duration = round((end - time) * 1000)
                container.mux(video_stream.encode(frame))
            container.mux(video_stream.encode(None))
        if audio_stream is not None:
            if audio is None:
                audio = tone(seconds if audio_seconds is None else audio_seconds, audio_rate, silent_seconds)
            _write_audio(container, audio_stream, audio, audio_rate, channels, audio_start)
    return path


def _write_audio(container, stream, wave: np.ndarray, rate: int, channels: int, start: float) -> None:
    sample_format = AUDIO_FORMATS[stream.codec_context.name]
    planar = np.repeat(wave[None], channels, axis=0)
    if channels == 2:
        planar[1] *= 0.5  # the channels differ, so a wrong down-mix would show
    if sample_format == "s16":
        planar = (planar * 32767).astype(np.int16)
    chunk = 960 if sample_format == "flt" else 1024
    offset = round(start * rate)
    for first in range(0, planar.shape[1], chunk):
        block = planar[:, first : first + chunk]
        if sample_format in ("s16", "flt"):  # packed formats interleave the channels
            block = block.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(block), format=sample_format, layout=stream.layout.name
        )
        frame.sample_rate, frame.pts, frame.time_base = rate, offset + first, Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_frames_and_wav(
    folder: Path,
    seconds: int,
    rate: int = 16000,
    size: tuple[int, int] = (40, 30),
    audio: np.ndarray | None = None,
) -> tuple[Path, Path]:
    """A folder of `seconds` PNG frames (named 1.png, 2.png, ..., 10.png) and a matching wav."""
    frames_dir = folder / "frames"
    frames_dir.mkdir(parents=True)
    for index in range(seconds):
        Image.fromarray(np.full((*size, 3), frame_brightness(index), dtype=np.uint8)).save(
            frames_dir / f"{index + 1}.png"
        )
    wav = folder / "audio.wav"
    soundfile.write(wav, tone(seconds, rate) if audio is None else audio, rate, subtype="FLOAT")
    return frames_dir, wav
