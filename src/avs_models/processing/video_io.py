"""Reading clips for AVS: one frame per second and the matching audio of a video file (PyAV, one
streaming pass), or frames + a sound file.

Timing rule (the same for video files, frame folders and arrays; see docs/segment-video.md):

- Every frame and audio sample is placed on the container's clock, in seconds from its start.
- Second `k` of a video spans `[v0 + k, v0 + k + 1)`, where `v0` is the time of the first video
  frame. Its frame is the one on screen just before `v0 + k + frame_time`; its audio is what the
  audio stream plays during that span, with silence wherever the audio stream has no samples
  (before it starts, after it ends).
- A second is segmented when the video covers at least half of it: a clip of `D` seconds gives
  `floor(D + 0.5)` seconds (7.4 s -> 7, 7.6 s -> 8, 0.5 s -> 1); a last partial second keeps the
  last frame and is padded with silence where its audio ends.
- Frames are shown as a player shows them: non-square pixels stretched to square ones (the sample
  aspect ratio), then turned upright (display-matrix rotation).

Frames and audio given without timestamps (a frame folder and a wav, or arrays) start together
at 0 and frame `k` is second `k`.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile
from PIL import Image, ImageOps

from ..models.resampling import resampled_span

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Tolerance on timestamps (s): container time bases are at least this fine.
_TIME_EPSILON = 1e-6


@dataclass
class DecodedClip:
    """Consecutive seconds of a clip: one frame per second and the audio of those seconds.

    Attributes:
        frames: `[H, W, 3]` uint8 RGB arrays, upright; frame `k` is second `first_second + k`.
        frame_times: presentation time (s, container clock) of each frame.
        waveform: mono float waveform at `sampling_rate`, `len(frames)` seconds long for video files
            (silence where the audio stream has no samples); as given for frames + audio.
        sampling_rate: rate of `waveform` in Hz.
        first_second: index of the first second in the whole clip.
        start_time: container-clock time (s) at which the first second starts; second `k` of these
            frames spans `[start_time + k, start_time + k + 1)`.
        video_duration: seconds of video of the whole clip (`None` when the frames did not come from
            a video file).
        audio_seconds: seconds of these `len(frames)` seconds that the audio stream covers (video files).
    """

    frames: list[np.ndarray]
    frame_times: list[float]
    waveform: np.ndarray
    sampling_rate: int
    first_second: int = 0
    start_time: float = 0.0
    video_duration: float | None = None
    audio_seconds: float | None = None

    @property
    def audio_duration(self) -> float:
        return len(self.waveform) / self.sampling_rate


def _open(path: Path) -> av.container.InputContainer:
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a folder, not a video file: pass a video, or a frames folder with --audio"
        )
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path} (check the path)")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as error:
        raise ValueError(
            f"cannot read video file {path}: {_ffmpeg_reason(error)}; is it a complete video file "
            "(mp4, mov, mkv, webm, ...), not truncated?"
        ) from error


def _ffmpeg_reason(error: av.error.FFmpegError) -> str:
    return getattr(error, "strerror", None) or str(error)


def _seconds_in(duration: float) -> int:
    """Seconds segmented in `duration` seconds of video: those it covers at least half of."""
    return math.floor(duration + 0.5 + _TIME_EPSILON)


def _displayed_rgb(frame: av.VideoFrame, sample_aspect_ratio: Fraction | None) -> np.ndarray:
    """The frame as a player shows it: square pixels (the width scaled by the sample aspect ratio,
    as players do), then upright."""
    width = frame.width
    if sample_aspect_ratio and sample_aspect_ratio != 1:
        width = max(1, round(frame.width * sample_aspect_ratio))
    image = frame.reformat(width=width, height=frame.height, format="rgb24").to_ndarray()
    # `rotation` is the counter-clockwise angle a player turns the picture by (display matrix).
    quarter_turns = round((frame.rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=quarter_turns)) if quarter_turns else image


def _float_samples(frame: av.AudioFrame) -> np.ndarray:
    """A decoded audio frame as float32 `[channels, samples]` in [-1, 1], whatever its sample format."""
    samples = frame.to_ndarray()
    if samples.ndim == 1:
        samples = samples[None]
    if not frame.format.is_planar:  # packed: [1, samples * channels]
        samples = samples.reshape(-1, len(frame.layout.channels)).T
    if np.issubdtype(samples.dtype, np.integer):
        half_range = float(2 ** (8 * samples.dtype.itemsize - 1))
        offset = half_range if np.issubdtype(samples.dtype, np.unsignedinteger) else 0.0
        samples = (samples.astype(np.float32) - offset) / half_range
    return samples.astype(np.float32)


class _AudioBuffer:
    """Mono samples of the audio stream at its own rate, kept only from `discard_before` on."""

    def __init__(self) -> None:
        self.rate: int | None = None
        self.start_time: float | None = None  # container-clock time of sample 0
        self.chunks: list[np.ndarray] = []
        self.first_index = 0  # stream sample index of chunks[0][0]
        self.num_samples = 0  # samples decoded so far
        self.finished = False

    def append(self, frame: av.AudioFrame, origin: float) -> None:
        if self.rate is None:
            self.rate = frame.sample_rate
            self.start_time = (float(frame.time) if frame.time is not None else 0.0) - origin
        mono = _float_samples(frame).mean(axis=0)
        self.chunks.append(mono)
        self.num_samples += len(mono)

    def read(self, first: int, stop: int) -> np.ndarray:
        """Stream samples `first .. stop - 1`, zeros outside what the stream holds."""
        out = np.zeros(stop - first, dtype=np.float64)
        held = np.concatenate(self.chunks) if len(self.chunks) > 1 else (self.chunks or [np.zeros(0)])[0]
        self.chunks = [held] if len(held) else []
        lo, hi = max(first, self.first_index), min(stop, self.first_index + len(held))
        if hi > lo:
            out[lo - first : hi - first] = held[lo - self.first_index : hi - self.first_index]
        return out

    @property
    def end_time(self) -> float:
        """Container-clock time (s) just after the last sample decoded so far."""
        return self.start_time + self.num_samples / self.rate

    def discard_before(self, index: int) -> None:
        held = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.float32)
        drop = min(max(0, index - self.first_index), len(held))
        self.chunks = [held[drop:]] if len(held) > drop else []
        self.first_index += drop


@dataclass
class _SecondSampler:
    """Chooses, for each second, the frame on screen just before `v0 + k + frame_time`."""

    frame_time: float
    sample_aspect_ratio: Fraction | None = None
    first_time: float | None = None
    shown: av.VideoFrame | None = None
    shown_time: float = 0.0
    end_time: float = 0.0
    last_interval: float = 0.0
    chosen: list[tuple[int, np.ndarray, float]] = field(default_factory=list)
    next_second: int = 0

    def add(self, frame: av.VideoFrame, time: float) -> None:
        if self.first_time is None:
            self.first_time = time
        while (
            self.shown is not None
            and time >= self.first_time + self.next_second + self.frame_time - _TIME_EPSILON
        ):
            self._choose()
        if self.shown is not None and time > self.shown_time:
            self.last_interval = time - self.shown_time
        duration = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
        self.shown, self.shown_time = frame, time
        self.end_time = max(self.end_time, time + (duration or self.last_interval))

    def _choose(self) -> None:
        self.chosen.append(
            (self.next_second, _displayed_rgb(self.shown, self.sample_aspect_ratio), self.shown_time)
        )
        self.next_second += 1

    @property
    def video_seconds(self) -> float:
        """Seconds of video decoded so far, from the first frame's start to the last one's end."""
        return 0.0 if self.first_time is None else self.end_time - self.first_time

    def confirmed_seconds(self) -> int:
        """Seconds known to be segmented: the video has reached at least half of them."""
        if self.first_time is None:
            return 0
        return _seconds_in(self.shown_time - self.first_time)

    def finish(self) -> int:
        """Choose the frames of the seconds after the last frame's start; returns the number of seconds."""
        if self.first_time is None:
            return 0
        total = _seconds_in(self.video_seconds)
        while self.next_second < total:
            self._choose()
        del self.chosen[total - self.chosen[0][0] if self.chosen else 0 :]
        return total


class VideoReader:
    """Reads a video file once, from start to end, as windows of consecutive seconds.

    Frames are chosen while decoding (only one frame per second is converted to RGB, and only the
    current window's are kept); the audio is mixed to mono, resampled to `sampling_rate` window by
    window (`models.resampling`), and paired with the frames by presentation time.

    Args:
        path: the video file (any container and codec FFmpeg reads).
        frame_time: where in each second the frame is taken, in (0, 1]; 1.0 = the end of the second.
        sampling_rate: rate of the returned audio.

    Raises (on opening):
        FileNotFoundError, IsADirectoryError: no such file.
        ValueError: FFmpeg cannot read it, or it has no video or no audio stream.
    """

    def __init__(self, path: str | Path, frame_time: float = 1.0, sampling_rate: int = 16000):
        if not 0.0 < frame_time <= 1.0:
            raise ValueError(f"`frame_time` must lie in (0, 1] seconds, got {frame_time}")
        self.path = Path(path)
        self.frame_time = frame_time
        self.sampling_rate = sampling_rate
        with _open(self.path) as container:
            if not container.streams.video:
                raise ValueError(f"{self.path} has no video stream: pass a video file, not a sound file")
            if not container.streams.audio:
                raise ValueError(
                    f"{self.path} has no audio track: the models segment what makes the sound, so they need "
                    "the video's audio (add it, or pass frames with a separate sound file)"
                )
            if len(container.streams.audio) > 1:
                logger.warning(
                    "%s has %d audio tracks; using the first (track 0)",
                    self.path,
                    len(container.streams.audio),
                )
            duration = container.duration / av.time_base if container.duration else None
        #: Estimated length from the container header (s), for progress bars; `None` if unknown.
        self.estimated_duration = duration

    @property
    def estimated_seconds(self) -> int | None:
        return None if self.estimated_duration is None else _seconds_in(self.estimated_duration)

    def windows(self, seconds_per_window: int) -> Iterator[DecodedClip]:
        """Decode the file once; yield `DecodedClip`s of `seconds_per_window` consecutive seconds (the
        last may be shorter), each with exactly its seconds' audio."""
        audio = _AudioBuffer()
        emitted, covered = 0, 0.0
        with _open(self.path) as container:
            video_stream, audio_stream = container.streams.video[0], container.streams.audio[0]
            sampler = _SecondSampler(self.frame_time, video_stream.sample_aspect_ratio)
            video_stream.thread_type = "AUTO"
            origin = container.start_time / av.time_base if container.start_time is not None else 0.0
            try:
                for packet in container.demux(video_stream, audio_stream):
                    for frame in packet.decode():
                        if frame.time is None:
                            continue
                        if packet.stream.type == "video":
                            sampler.add(frame, float(frame.time) - origin)
                        else:
                            audio.append(frame, origin)
                    while self._window_ready(sampler, audio, emitted, seconds_per_window):
                        window = self._window(sampler, audio, emitted, seconds_per_window, None)
                        covered += window.audio_seconds
                        emitted += seconds_per_window
                        yield window
            except av.error.FFmpegError as error:
                raise ValueError(
                    f"cannot decode {self.path} after {sampler.video_seconds:.2f} s of video: "
                    f"{_ffmpeg_reason(error)}; the file may be truncated or corrupt"
                ) from error
        audio.finished = True
        total = sampler.finish()
        if total == 0:
            raise ValueError(
                f"{self.path} is too short: {sampler.video_seconds:.2f} s of video, at least 0.5 s is "
                "needed (one mask per second of video)"
            )
        if audio.rate is None:
            raise ValueError(f"{self.path} has an audio track without any decodable sound")
        video_duration = sampler.video_seconds
        self._warn_if_cut_short(sampler, audio)
        while emitted < total:
            window = self._window(
                sampler, audio, emitted, min(seconds_per_window, total - emitted), video_duration
            )
            covered += window.audio_seconds
            emitted += len(window.frames)
            yield window
        expected = min(float(total), video_duration)
        if covered < expected - 0.05:
            logger.warning(
                "%s: the audio track covers %.2f s of the %.2f s of video segmented; the rest was given silence",
                self.path,
                covered,
                expected,
            )

    def _warn_if_cut_short(self, sampler: _SecondSampler, audio: _AudioBuffer) -> None:
        # A truncated file decodes without an error up to where its data stops: both streams end
        # well before the length the container's header gives.
        if self.estimated_duration is None:
            return
        decoded_end = max(sampler.end_time, audio.end_time)
        if decoded_end < self.estimated_duration - 1.0:
            logger.warning(
                "%s stops after %.2f s though its header says %.2f s: the file may be truncated; "
                "the %.2f s that decode were segmented",
                self.path,
                decoded_end,
                self.estimated_duration,
                sampler.video_seconds,
            )

    def _window_ready(self, sampler: _SecondSampler, audio: _AudioBuffer, first: int, count: int) -> bool:
        if sampler.confirmed_seconds() < first + count or len(sampler.chosen) < count:
            return False
        if audio.rate is None:
            return False
        # Audio is complete for the window once the stream has passed its end (plus the resampler's reach).
        stop_time = sampler.first_time + first + count + 0.01
        return audio.end_time >= stop_time

    def _window(
        self,
        sampler: _SecondSampler,
        audio: _AudioBuffer,
        first: int,
        count: int,
        video_duration: float | None,
    ) -> DecodedClip:
        chosen, sampler.chosen = sampler.chosen[:count], sampler.chosen[count:]
        window_start = sampler.first_time + first
        if audio.rate is None:  # no sound decoded at all: checked by the caller after the last window
            waveform, audio_seconds = np.zeros(count * self.sampling_rate, dtype=np.float32), 0.0
        else:
            # Output sample j of the stream's resampled audio lies at audio.start_time + j / sampling_rate.
            start = round((window_start - audio.start_time) * self.sampling_rate)
            waveform = resampled_span(
                audio.read, start, count * self.sampling_rate, audio.rate, self.sampling_rate
            ).astype(np.float32)
            audio_seconds = max(
                0.0, min(audio.end_time, window_start + count) - max(audio.start_time, window_start)
            )
            next_start = audio.start_time + (start + count * self.sampling_rate) / self.sampling_rate
            audio.discard_before(math.floor((next_start - audio.start_time) * audio.rate) - audio.rate // 10)
        return DecodedClip(
            frames=[image for _, image, _ in chosen],
            frame_times=[time for _, _, time in chosen],
            waveform=waveform,
            sampling_rate=self.sampling_rate,
            first_second=first,
            start_time=window_start,
            video_duration=video_duration,
            audio_seconds=audio_seconds,
        )


def read_video(path: str | Path, frame_time: float = 1.0, sampling_rate: int = 16000) -> DecodedClip:
    """Decode a whole video file: one upright frame per second and the paired mono audio at
    `sampling_rate` (see the module's timing rule).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded, has no video or no audio stream, or is under 0.5 s.
    """
    (clip,) = VideoReader(path, frame_time, sampling_rate).windows(seconds_per_window=sys.maxsize)
    return clip


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frame_paths(folder: str | Path) -> list[Path]:
    """The images of a frames folder, in natural file-name order (`2.png` before `10.png`).

    Raises:
        FileNotFoundError: no such folder.
        ValueError: it holds no images (the message names what it holds instead, e.g. videos).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder} (check the path)")
    paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    if not paths:
        others = [p.name for p in sorted((p for p in folder.iterdir() if p.is_file()), key=_natural_key)]
        held = (
            f"it holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}"
            if others
            else "it is empty"
        )
        raise ValueError(
            f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); {held}: pass a folder of frames, "
            "or one video file"
        )
    return paths


def read_frame_folder(folder: str | Path) -> list[np.ndarray]:
    """RGB frames of a folder of images, in natural file-name order (`2.png` before `10.png`), turned
    as an image viewer shows them (EXIF orientation, as phone cameras write it).

    Raises:
        FileNotFoundError: no such folder.
        ValueError: it holds no images, an image cannot be read, or the frames differ in size.
    """
    paths = frame_paths(folder)
    frames = []
    for path in paths:
        try:
            with Image.open(path) as image:
                frames.append(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))
        except OSError as error:
            raise ValueError(f"cannot read image {path}: {error}") from error
        if frames[-1].shape != frames[0].shape:
            (height, width), (first_height, first_width) = frames[-1].shape[:2], frames[0].shape[:2]
            raise ValueError(
                f"{path} is {width}x{height} but {paths[0].name} is {first_width}x{first_height}: "
                "the frames of one video must all have one size"
            )
    return frames


def read_audio_file(path: str | Path) -> tuple[np.ndarray, int]:
    """A sound file as a float32 waveform (`[samples]` or `[samples, channels]`) and its rate.

    wav, flac, ogg and mp3 are read by libsndfile; other formats (m4a/AAC voice memos, opus, the
    sound of a video file) by FFmpeg, whose first audio stream is used.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path} (check the path)")
    try:
        waveform, sampling_rate = soundfile.read(str(path), dtype="float32")
    except (RuntimeError, soundfile.LibsndfileError) as error:
        try:
            return _read_audio_with_ffmpeg(path)
        except (av.error.FFmpegError, ValueError):
            reason = str(error).rstrip(".")
            raise ValueError(
                f"cannot read audio file {path}: {reason}; pass a sound file (wav, flac, mp3, ogg, m4a, ...)"
            ) from error
    return waveform, int(sampling_rate)


def _read_audio_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        chunks = [_float_samples(frame) for frame in container.decode(stream)]
        # An encoder's last frame runs past the end (AAC pads to 1024 samples): keep the stream's length.
        length = round(stream.duration * stream.time_base * rate) if stream.duration else None
    if not chunks:
        raise ValueError(f"{path} holds no decodable sound")
    waveform = np.concatenate(chunks, axis=1)[:, :length].T  # [samples, channels]
    return (waveform[:, 0] if waveform.shape[1] == 1 else waveform), rate


__all__ = ["DecodedClip", "VideoReader", "frame_paths", "read_audio_file", "read_frame_folder", "read_video"]
