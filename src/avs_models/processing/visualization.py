"""Overlays of predicted masks on frames (fill, outline, class legend, side-by-side strips), written as
PNG frames, an animated GIF or an MP4 that keeps the video's own audio. The GIF and MP4 writers take
one overlay at a time, so a long video never holds all its overlays in memory."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import binary_dilation

from ..data.avss_classes import avss_palette

# Fill of binary masks: a saturated lime, rare in natural scenes, bright enough for dark frames and saturated enough for bright ones;
# the white-on-black outline keeps the edge visible whatever the background.
BINARY_COLOUR = (200, 255, 0)
_OUTLINE_INNER = (255, 255, 255)
_OUTLINE_OUTER = (0, 0, 0)
# Audio codecs copied into the MP4 as they are; others are re-encoded to AAC.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus"})


def mask_palette(num_labels: int) -> np.ndarray:
    """Colours `[num_labels or 2, 3]` uint8 for class ids: `BINARY_COLOUR` for the foreground of a
    binary model (`num_labels == 1`), the AVSS palette for class maps."""
    if num_labels <= 1:
        return np.array([(0, 0, 0), BINARY_COLOUR], dtype=np.uint8)
    return avss_palette(num_labels)


def _outline_width(height: int, width: int) -> int:
    return max(1, round(min(height, width) / 180))


def overlay_mask(
    frame: np.ndarray,
    mask: np.ndarray,
    alpha: float = 0.5,
    palette: np.ndarray | None = None,
    outline: bool = True,
) -> np.ndarray:
    """Blend class colours over an RGB frame `[H, W, 3]` where `mask` `[H, W]` (0/1 or class ids) is
    non-zero, and draw each region's outline (white with a black edge) so it reads on any scene.

    Args:
        frame: uint8 RGB `[H, W, 3]`.
        mask: `[H, W]` integer mask: 0 background, `k` drawn in `palette[k]`.
        alpha: opacity of the fill, in [0, 1].
        palette: `[K, 3]` colours; by default `mask_palette` (the binary colour for 0/1 masks, the
            AVSS palette for class ids).
        outline: draw the regions' outlines.
    """
    frame = np.asarray(frame)
    mask = np.asarray(mask)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"`frame` must have shape [H, W, 3], got {frame.shape}")
    if mask.shape != frame.shape[:2]:
        raise ValueError(f"`mask` must have the frame's size {frame.shape[:2]}, got {mask.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must lie in [0, 1], got {alpha}")
    mask = mask.astype(np.int64)
    if palette is None:
        palette = mask_palette(1 if mask.max(initial=0) <= 1 else int(mask.max()) + 1)
    palette = np.asarray(palette)
    if mask.max(initial=0) >= len(palette):
        raise ValueError(f"`mask` holds class {int(mask.max())} but the palette has {len(palette)} colours")
    colours = palette[mask].astype(np.float32)
    blended = (1 - alpha) * frame.astype(np.float32) + alpha * colours
    overlay = np.where(mask[..., None] > 0, blended, frame).round().astype(np.uint8)
    if outline and mask.any():
        # Region edges: pixels whose right or lower neighbour has another class.
        edges = np.zeros(mask.shape, dtype=bool)
        edges[:, :-1] |= mask[:, :-1] != mask[:, 1:]
        edges[:-1, :] |= mask[:-1, :] != mask[1:, :]
        width = _outline_width(*mask.shape)
        overlay[binary_dilation(edges, iterations=width)] = _OUTLINE_OUTER
        overlay[binary_dilation(edges, iterations=max(1, width // 2)) if width > 1 else edges] = (
            _OUTLINE_INNER
        )
    return overlay


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw_legend(image: np.ndarray, entries: list[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    """Write a legend (a colour swatch and a name per entry) in the top-left corner of `image`."""
    if not entries:
        return image
    height, width = image.shape[:2]
    size = max(10, round(height / 28))
    font, pad = _font(size), max(2, size // 3)
    picture = Image.fromarray(image).convert("RGBA")
    layer = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    text_width = max(draw.textlength(name, font=font) for name, _ in entries)
    box_width = min(width, round(pad * 3 + size + text_width))
    box_height = min(height, pad + len(entries) * (size + pad))
    draw.rectangle((0, 0, box_width, box_height), fill=(0, 0, 0, 160))
    for row, (name, colour) in enumerate(entries):
        top = pad + row * (size + pad)
        draw.rectangle(
            (pad, top, pad + size, top + size), fill=tuple(int(c) for c in colour) + (255,), outline="white"
        )
        draw.text((pad * 2 + size, top), name, fill="white", font=font)
    return np.asarray(Image.alpha_composite(picture, layer).convert("RGB"))


def legend_entries(
    mask: np.ndarray, id2label: dict[int, str], palette: np.ndarray
) -> list[tuple[str, tuple]]:
    """(name, colour) of each class present in a class map, background excluded."""
    return [
        (id2label.get(int(class_id), str(int(class_id))), tuple(palette[int(class_id)]))
        for class_id in np.unique(mask)
        if class_id != 0
    ]


def side_by_side(frame: np.ndarray, overlay: np.ndarray, gap: int = 4) -> np.ndarray:
    """The strip `frame | overlay` (white gap between), to compare the mask with the picture."""
    separator = np.full((frame.shape[0], gap, 3), 255, dtype=np.uint8)
    return np.concatenate([frame, separator, overlay], axis=1)


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """`image` with a white band above it holding `text`."""
    size = max(12, round(image.shape[1] / 40))
    band = Image.new("RGB", (image.shape[1], size + size // 2 * 2), "white")
    ImageDraw.Draw(band).text((size // 2, size // 2), text, fill="black", font=_font(size))
    return np.concatenate([np.asarray(band), image], axis=0)


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


class GifWriter:
    """An animated GIF written one image at a time (FFmpeg's GIF encoder, a 256-colour palette per image)."""

    def __init__(self, path: str | Path, seconds_per_frame: float = 1.0):
        self.path = Path(path)
        self._container = av.open(str(self.path), "w", format="gif")
        self._stream = None
        self._rate = Fraction(1) / Fraction(seconds_per_frame).limit_denominator(1000)
        self.num_frames = 0

    def add(self, image: np.ndarray) -> None:
        if self._stream is None:
            self._stream = self._container.add_stream("gif", rate=self._rate)
            self._stream.height, self._stream.width = image.shape[:2]
            self._stream.pix_fmt = "pal8"
        indexed = Image.fromarray(image).quantize(256, method=Image.Quantize.FASTOCTREE)
        palette = np.zeros((256, 4), dtype=np.uint8)
        colours = np.asarray(indexed.getpalette(), dtype=np.uint8).reshape(-1, 3)[:256]
        palette[: len(colours), 0], palette[: len(colours), 1:] = 255, colours  # ARGB
        frame = av.VideoFrame.from_ndarray((np.asarray(indexed), palette), format="pal8")
        frame.pts, frame.time_base = self.num_frames, 1 / self._rate
        self._container.mux(self._stream.encode(frame))
        self.num_frames += 1

    def close(self) -> Path:
        if self._stream is None:
            self._container.close()
            self.path.unlink(missing_ok=True)
            raise ValueError("no frames to write")
        self._container.mux(self._stream.encode(None))
        self._container.close()
        return self.path


class AudioSource:
    """The sound to put under an overlay video: the audio stream of a video file (copied as it is when
    MP4 takes its codec, else re-encoded to AAC at its own rate and channels) or a waveform.

    Args:
        video: a video file whose first audio stream is used, from `start_time` (s, container clock:
            the time of the first overlay) on.
        waveform: samples `[samples]` or `[samples, channels]` (float in [-1, 1]).
        sampling_rate: rate of `waveform` in Hz.
    """

    def __init__(
        self,
        video: str | Path | None = None,
        start_time: float = 0.0,
        waveform: np.ndarray | None = None,
        sampling_rate: int | None = None,
    ):
        if (video is None) == (waveform is None):
            raise ValueError("pass either `video` or `waveform` (with `sampling_rate`)")
        self.video, self.start_time = video, start_time
        self.waveform, self.sampling_rate = waveform, sampling_rate


class Mp4Writer:
    """An H.264 MP4 showing each added overlay for `seconds_per_frame`, with sound from an
    `AudioSource`, written as the overlays come (audio is interleaved up to the current overlay)."""

    def __init__(self, path: str | Path, audio: AudioSource | None = None, seconds_per_frame: float = 1.0):
        self.path = Path(path)
        self.seconds_per_frame = seconds_per_frame
        self._container = av.open(str(self.path), "w")
        self._rate = Fraction(1) / Fraction(seconds_per_frame).limit_denominator(1000)
        self._video = None
        self._audio_source = audio
        self._audio_packets = None
        self.num_frames = 0

    def add(self, image: np.ndarray) -> None:
        if self._video is None:
            self._video = self._container.add_stream("libx264", rate=self._rate)
            # H.264 with yuv420p needs even sizes.
            self._video.height, self._video.width = (image.shape[0] // 2 * 2, image.shape[1] // 2 * 2)
            self._video.pix_fmt = "yuv420p"
            self._video.options = {"rc-lookahead": "4"}
            if self._audio_source is not None:
                self._audio_packets = self._open_audio(self._audio_source)
        frame = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(image[: self._video.height, : self._video.width]), format="rgb24"
        )
        frame.pts, frame.time_base = self.num_frames, 1 / self._rate
        self._container.mux(self._video.encode(frame))
        self.num_frames += 1
        self._write_audio_until(self.num_frames * self.seconds_per_frame)

    def close(self) -> Path:
        if self._video is None:
            self._container.close()
            self.path.unlink(missing_ok=True)
            raise ValueError("no frames to write")
        self._container.mux(self._video.encode(None))
        # The rest of the sound, up to the end of its stream (and the audio encoder's last packets).
        self._write_audio_until(float("inf"))
        if self._audio_packets is not None:
            self._audio_packets.close()
        self._container.close()
        return self.path

    def _open_audio(self, source: AudioSource):
        if source.video is not None:
            return _copied_audio(self._container, source.video, source.start_time)
        return _encoded_waveform(self._container, source.waveform, source.sampling_rate)

    def _write_audio_until(self, end_time: float) -> None:
        if self._audio_packets is None:
            return
        self._audio_packets.send_until(end_time)


class _AudioPackets:
    """The output's audio packets, from a generator of `(time, packets)`, muxed up to a given time."""

    def __init__(self, container, packets, on_close=None):
        self._container, self._packets, self._on_close = container, packets, on_close
        self._pending = None

    def send_until(self, end_time: float) -> None:
        while True:
            if self._pending is None:
                self._pending = next(self._packets, None)
                if self._pending is None:
                    return
            time, packets = self._pending
            if time >= end_time:
                return
            self._container.mux(packets)
            self._pending = None

    def close(self) -> None:
        self._packets.close()
        if self._on_close is not None:
            self._on_close()


def _copied_audio(output, video: str | Path, start_time: float) -> _AudioPackets:
    source = av.open(str(video))
    origin = source.start_time / av.time_base if source.start_time is not None else 0.0
    in_stream = source.streams.audio[0]
    if in_stream.codec_context.name in MP4_AUDIO_CODECS:
        out_stream = output.add_stream_from_template(in_stream)
        packets = _remuxed(source, in_stream, out_stream, origin + start_time)
    else:
        rate, layout = in_stream.codec_context.sample_rate, in_stream.codec_context.layout
        out_stream = output.add_stream("aac", rate=rate, layout=_named_layout(layout))
        packets = _reencoded(source, in_stream, out_stream, origin + start_time)
    return _AudioPackets(output, packets, on_close=source.close)


def _named_layout(layout: av.AudioLayout) -> str:
    """A layout AAC can encode. Files such as AVI with PCM sound often leave the channel order
    unnamed ("1 channels"), which AAC refuses: those become mono, or stereo (down-mixed) beyond one."""
    if not layout.name.endswith("channels"):
        return layout.name
    return "mono" if len(layout.channels) == 1 else "stereo"


def _remuxed(source, in_stream, out_stream, start_time: float):
    # Shift the stream so that `start_time` becomes 0; packets from before it are left out.
    offset = round(start_time / in_stream.time_base)
    for packet in source.demux(in_stream):
        if packet.pts is None or packet.pts < offset:
            continue
        packet.pts -= offset
        packet.dts = packet.pts if packet.dts is None else packet.dts - offset
        packet.stream = out_stream
        yield float(packet.pts * in_stream.time_base), [packet]


def _reencoded(source, in_stream, out_stream, start_time: float):
    # Decoded, converted to AAC's planar float at the same rate and channels, from `start_time` on.
    resampler = av.AudioResampler(format="fltp", layout=out_stream.layout, rate=out_stream.rate)
    written = 0
    for frame in source.decode(in_stream):
        if frame.time is None or frame.time + frame.samples / frame.sample_rate <= start_time:
            continue
        skip = max(0, round((start_time - frame.time) * frame.sample_rate))
        for converted in resampler.resample(frame):
            samples = converted.to_ndarray()[:, skip:]
            skip = 0
            yield written / out_stream.rate, out_stream.encode(_audio_frame(samples, out_stream, written))
            written += samples.shape[1]
    yield written / out_stream.rate, out_stream.encode(None)


def _audio_frame(planar: np.ndarray, stream, first_sample: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(planar, dtype=np.float32), format="fltp", layout=stream.layout.name
    )
    frame.sample_rate, frame.pts, frame.time_base = stream.rate, first_sample, Fraction(1, stream.rate)
    return frame


def _encoded_waveform(output, waveform: np.ndarray, sampling_rate: int) -> _AudioPackets:
    samples = np.asarray(waveform, dtype=np.float32)
    samples = samples[:, None] if samples.ndim == 1 else samples  # [samples, channels]
    layout = {1: "mono", 2: "stereo"}.get(samples.shape[1])
    if layout is None:  # AAC layouts beyond stereo need channel names: mix down
        samples, layout = samples.mean(axis=1, keepdims=True), "mono"
    stream = output.add_stream("aac", rate=sampling_rate, layout=layout)

    def packets():
        chunk = 1024
        planar = samples.T
        for start in range(0, planar.shape[1], chunk):
            yield (
                start / sampling_rate,
                stream.encode(_audio_frame(planar[:, start : start + chunk], stream, start)),
            )
        yield planar.shape[1] / sampling_rate, stream.encode(None)

    return _AudioPackets(output, packets())


def save_gif(overlays: list[np.ndarray], path: str | Path, seconds_per_frame: float = 1.0) -> Path:
    """An animated GIF showing each overlay for `seconds_per_frame`, looping."""
    writer = GifWriter(path, seconds_per_frame)
    for overlay in overlays:
        writer.add(overlay)
    return writer.close()


def save_mp4(
    overlays: list[np.ndarray],
    path: str | Path,
    waveform: np.ndarray | None = None,
    sampling_rate: int = 16000,
    seconds_per_frame: float = 1.0,
) -> Path:
    """An H.264 MP4 showing each overlay for `seconds_per_frame`, with `waveform` (mono or
    `[samples, channels]`) as AAC sound at its own rate."""
    audio = None if waveform is None else AudioSource(waveform=waveform, sampling_rate=sampling_rate)
    writer = Mp4Writer(path, audio, seconds_per_frame)
    for overlay in overlays:
        writer.add(overlay)
    return writer.close()


__all__ = [
    "BINARY_COLOUR",
    "AudioSource",
    "GifWriter",
    "Mp4Writer",
    "caption",
    "draw_legend",
    "legend_entries",
    "mask_palette",
    "overlay_mask",
    "save_gif",
    "save_mp4",
    "save_png_frames",
    "side_by_side",
]
