"""`AudioVisualProcessor`: a video (or frames + audio) -> clips of T frames paired with T one-second audio inputs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import BatchFeature, PreTrainedConfig
from transformers.feature_extraction_utils import FeatureExtractionMixin
from transformers.models.auto.feature_extraction_auto import FEATURE_EXTRACTOR_MAPPING
from transformers.processing_utils import ProcessorMixin

from ..models.audio_utils import to_mono_float_waveform, validate_sampling_rate, validated_count
from ..models.vggish.feature_extraction_vggish import VGGishFeatureExtractor
from .image_processing_audio_visual import AudioVisualImageProcessor, frame_to_rgb_array
from .video_io import DecodedClip, VideoReader, read_audio_file, read_frame_folder

# Clips a video file is prepared by at a time when all of it is asked for (`__call__`).
_CLIPS_PER_WINDOW = 8


def audio_feature_extractor_for(config: PreTrainedConfig) -> FeatureExtractionMixin:
    """A default feature extractor for a segmentation model's audio encoder (`config.audio_config`):
    the one registered with `AutoFeatureExtractor` for its config class, VGGish's when it has none."""
    audio_config = getattr(config, "audio_config", None)
    if audio_config is None:
        return VGGishFeatureExtractor()
    if type(audio_config) not in FEATURE_EXTRACTOR_MAPPING:
        raise ValueError(
            f"no feature extractor is registered for the audio encoder {audio_config.model_type!r}: "
            "pass one to AudioVisualProcessor / AVSBenchCollator yourself"
        )
    return FEATURE_EXTRACTOR_MAPPING[type(audio_config)]()


class AudioVisualProcessor(ProcessorMixin):
    r"""Pairs video frames with one-second audio inputs, clip by clip, and turns model logits back into masks.

    A clip is `num_frames` consecutive seconds: one frame per second (the frame on screen just
    before `k + frame_time` seconds; 1.0 = the end of each second, as AVSBench) and the audio
    input of that second, made by the feature extractor of the model's audio encoder (a VGGish
    log-mel example as `input_features`, or a 16 kHz waveform segment as `input_values` for
    PANNs and BEATs). Longer inputs are split into consecutive clips; the last,
    shorter one is padded (zero pixels, silent audio, `frame_mask` 0) or dropped.

    A video file's frames and audio are paired by their timestamps (streams may start at different
    times, frame rates may vary; rotation metadata is applied): see `video_io` and
    docs/segment-video.md for the rule. `iter_clips` gives the same inputs window by window, decoding
    the file once, for videos of any length.

    Args:
        image_processor ([`AudioVisualImageProcessor`]): resizes and normalises frames.
        feature_extractor (`FeatureExtractionMixin`): the audio encoder's feature extractor
            (`VGGishFeatureExtractor`, `PannsFeatureExtractor` or `BeatsFeatureExtractor`), one
            audio input per second.
        num_frames (`int`, defaults to 5): frames (seconds) per clip, T.
        frame_time (`float`, defaults to 1.0): where in each second the frame is taken, in (0, 1].
        pad_last_clip (`bool`, defaults to `True`): pad the last incomplete clip, or drop it.
        max_length_mismatch (`float`, defaults to 1.0): largest allowed difference in seconds
            between the frames and the audio; the audio is padded with silence or trimmed within it.
    """

    def __init__(
        self,
        image_processor=None,
        feature_extractor=None,
        num_frames: int = 5,
        frame_time: float = 1.0,
        pad_last_clip: bool = True,
        max_length_mismatch: float = 1.0,
        **kwargs,
    ):
        num_frames = validated_count("num_frames", num_frames)
        if not 0.0 < frame_time <= 1.0:
            raise ValueError(f"`frame_time` must lie in (0, 1], got {frame_time}")
        if max_length_mismatch < 0:
            raise ValueError(f"`max_length_mismatch` must be >= 0 seconds, got {max_length_mismatch}")
        self.num_frames = num_frames
        self.frame_time = frame_time
        self.pad_last_clip = pad_last_clip
        self.max_length_mismatch = max_length_mismatch
        super().__init__(image_processor, feature_extractor, **kwargs)

    def __call__(
        self,
        video: str | Path | None = None,
        *,
        frames: list | None = None,
        audio: np.ndarray | torch.Tensor | list | None = None,
        sampling_rate: int | None = None,
        frames_dir: str | Path | None = None,
        audio_path: str | Path | None = None,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        """Prepare model inputs from one of: a video file; `frames` + `audio` (+ `sampling_rate`);
        `frames_dir` + `audio_path`.

        Args:
            video: path of a video file with an audio track (decoded with PyAV).
            frames: one frame per second (PIL images, `[H, W, 3]` arrays or `[3, H, W]` tensors).
            audio: the waveform going with `frames` (1-D, or multi-channel; float or integer PCM).
            sampling_rate: rate of `audio` in Hz (required with `audio`).
            frames_dir: folder of frame images, one per second, in natural name order.
            audio_path: sound file going with `frames_dir` (or with `frames`).
            return_tensors: only `"pt"` is supported.

        Returns:
            `BatchFeature` with, for C clips of T = `num_frames`:
            `pixel_values` `[C, T, 3, H, W]`, the audio under the feature extractor's input name
            (`input_features` `[C, T, 1, 96, 64]` for VGGish, `input_values` `[C, T, 16000]`
            for PANNs and BEATs),
            `frame_mask` `[C, T]` (1 real frame, 0 padding), `original_sizes` `[C, T, 2]`
            (height, width of each upright frame), `frame_times` `[C, T]` (time of each frame) and
            `second_starts` `[C, T]` (start of the second it stands for), in seconds on the
            container's clock (float64; -1 for padding).
        """
        if return_tensors != "pt":
            raise ValueError(f"`return_tensors` must be 'pt', got {return_tensors!r}")
        if video is not None:
            self._check_single_input(video, frames, audio, sampling_rate, frames_dir, audio_path)
            # Window by window, so that only resized frames are kept, never a whole video at full size.
            windows = list(self.iter_clips(video, clips_per_window=_CLIPS_PER_WINDOW))
            return BatchFeature(
                {
                    key: torch.cat([window[key] for window in windows])
                    for key in windows[0]
                    if key != "first_second"
                }
            )
        return self._make_clips(
            self._load_frames_and_audio(frames, audio, sampling_rate, frames_dir, audio_path)
        )

    def iter_clips(
        self,
        video: str | Path | None = None,
        *,
        clips_per_window: int = 1,
        return_frames: bool = False,
        show_progress: bool | None = False,
        progress_after_seconds: float = 60.0,
        **inputs,
    ) -> Iterator[BatchFeature]:
        """Prepare the same model inputs as `__call__`, a window of `clips_per_window` clips at a time,
        decoding a video file once, so that memory stays flat however long the video is.

        Takes the inputs of `__call__` (a video path, or `frames`/`frames_dir` with
        `audio`/`audio_path`). Each window is a `BatchFeature` like `__call__`'s for its clips, plus
        `first_second` (the index of its first second) and, with `return_frames=True`, `frames`: the
        upright RGB frames (`[H, W, 3]` uint8, original size) of its real seconds. Concatenating the
        windows gives `__call__`'s output.

        `show_progress` shows a progress bar over seconds of video (`None`: only for inputs longer
        than `progress_after_seconds`).
        """
        clips_per_window = validated_count("clips_per_window", clips_per_window)
        seconds_per_window = clips_per_window * self.num_frames
        if video is not None:
            self._check_single_input(video, **inputs)
            reader = VideoReader(video, self.frame_time, self.feature_extractor.sampling_rate)
            windows, total, name = (
                reader.windows(seconds_per_window),
                reader.estimated_seconds,
                Path(video).name,
            )
        else:
            clip = self._load_frames_and_audio(**inputs)
            windows, total, name = self._split(clip, seconds_per_window), len(clip.frames), "frames"
        if show_progress is None:
            show_progress = total is not None and total > progress_after_seconds
        with tqdm(total=total, desc=name, unit="s", disable=not show_progress) as progress:
            for window in windows:
                if (
                    window.first_second > 0
                    and not self.pad_last_clip
                    and len(window.frames) < self.num_frames
                ):
                    break  # the incomplete last clip is dropped
                clips = self._make_clips(window)
                clips["first_second"] = window.first_second
                if return_frames:
                    clips["frames"] = [frame_to_rgb_array(frame) for frame in window.frames]
                progress.update(len(window.frames))
                yield clips

    @staticmethod
    def _split(clip: DecodedClip, seconds_per_window: int) -> Iterator[DecodedClip]:
        samples_per_second = clip.sampling_rate
        for first in range(0, len(clip.frames), seconds_per_window):
            last = first + seconds_per_window
            # The last window keeps the rest of the audio (an array may run past its frames).
            end_sample = last * samples_per_second if last < len(clip.frames) else len(clip.waveform)
            yield DecodedClip(
                clip.frames[first:last],
                clip.frame_times[first:last],
                clip.waveform[first * samples_per_second : end_sample],
                clip.sampling_rate,
                first_second=first,
                start_time=clip.start_time + first,
            )

    @staticmethod
    def _check_single_input(
        video, frames=None, audio=None, sampling_rate=None, frames_dir=None, audio_path=None
    ):
        given = sorted(
            name
            for name, value in (
                ("frames", frames),
                ("frames_dir", frames_dir),
                ("audio", audio),
                ("audio_path", audio_path),
            )
            if value is not None
        )
        if given:
            raise ValueError(f"pass either `video` alone or frames with audio, not `video` with {given}")

    def _load_frames_and_audio(
        self, frames=None, audio=None, sampling_rate=None, frames_dir=None, audio_path=None
    ) -> DecodedClip:
        if all(value is None for value in (frames, frames_dir, audio, audio_path)):
            raise ValueError(
                "no input: pass a video path, or `frames` / `frames_dir` with `audio` / `audio_path`"
            )
        if (frames is None) == (frames_dir is None):
            raise ValueError("pass exactly one of `frames` and `frames_dir`")
        if (audio is None) == (audio_path is None):
            raise ValueError("pass exactly one of `audio` (with `sampling_rate`) and `audio_path`")
        frame_list = read_frame_folder(frames_dir) if frames_dir is not None else list(frames)
        if not frame_list:
            raise ValueError("`frames` is empty: pass at least one frame")
        if audio_path is not None:
            audio, sampling_rate = read_audio_file(audio_path)
        elif sampling_rate is None:
            raise ValueError(
                "`sampling_rate` is required with raw `audio` arrays: pass the waveform's rate in Hz"
            )
        waveform = self._mono_waveform_at_model_rate(audio, sampling_rate)
        frame_times = [index + self.frame_time for index in range(len(frame_list))]
        clip = DecodedClip(frame_list, frame_times, waveform, self.feature_extractor.sampling_rate)
        self._check_lengths(clip)
        return clip

    def _mono_waveform_at_model_rate(self, audio, sampling_rate) -> np.ndarray:
        rate = validate_sampling_rate(sampling_rate)
        return self.feature_extractor.resample(to_mono_float_waveform(audio), rate)

    def _check_lengths(self, clip: DecodedClip) -> None:
        # Frames and audio given without timestamps must start together and last about as long; a
        # video file's streams are paired by their timestamps instead (`VideoReader`).
        visual_seconds = float(len(clip.frames))
        difference = visual_seconds - clip.audio_duration
        if abs(difference) > self.max_length_mismatch:
            longer, shorter = ("video", "audio") if difference > 0 else ("audio", "video")
            raise ValueError(
                f"the {longer} is {abs(difference):.2f} s longer than the {shorter} "
                f"({visual_seconds:.2f} s of frames vs {clip.audio_duration:.2f} s of audio); "
                f"at most {self.max_length_mismatch} s is allowed (`max_length_mismatch`): pass one frame per "
                "second of the audio"
            )

    def _make_clips(self, clip: DecodedClip) -> BatchFeature:
        num_seconds, clip_length = len(clip.frames), self.num_frames
        num_clips = math.ceil(num_seconds / clip_length) if self.pad_last_clip else num_seconds // clip_length
        if num_clips == 0:
            raise ValueError(
                f"the input has {num_seconds} s, less than one clip of {clip_length} s, and `pad_last_clip` is False"
            )
        pixels = self.image_processor(clip.frames[: num_clips * clip_length])
        height, width = pixels["pixel_values"].shape[-2:]
        pixel_values = torch.zeros(num_clips * clip_length, 3, height, width)
        original_sizes = torch.zeros(num_clips * clip_length, 2, dtype=torch.long)
        frame_times = torch.full((num_clips * clip_length,), -1.0, dtype=torch.float64)
        second_starts = torch.full((num_clips * clip_length,), -1.0, dtype=torch.float64)
        real = len(pixels["pixel_values"])
        pixel_values[:real] = pixels["pixel_values"]
        original_sizes[:real] = pixels["original_sizes"]
        original_sizes[real:] = pixels["original_sizes"][-1]
        frame_times[:real] = torch.tensor(clip.frame_times[:real], dtype=torch.float64)
        second_starts[:real] = clip.start_time + torch.arange(real, dtype=torch.float64)
        frame_mask = (torch.arange(num_clips * clip_length) < real).long()

        samples_per_clip = clip_length * clip.sampling_rate
        audio_key = self.feature_extractor.model_input_names[0]
        audio_inputs = torch.stack(
            [
                torch.from_numpy(
                    self.feature_extractor(
                        self._clip_audio(clip.waveform, index * samples_per_clip, samples_per_clip),
                        sampling_rate=clip.sampling_rate,
                        num_segments=clip_length,
                    )[audio_key]
                )
                for index in range(num_clips)
            ]
        )
        shape = (num_clips, clip_length)
        return BatchFeature(
            {
                "pixel_values": pixel_values.reshape(*shape, 3, height, width),
                audio_key: audio_inputs,
                "frame_mask": frame_mask.reshape(shape),
                "original_sizes": original_sizes.reshape(*shape, 2),
                "frame_times": frame_times.reshape(shape),
                "second_starts": second_starts.reshape(shape),
            }
        )

    @staticmethod
    def _clip_audio(waveform: np.ndarray, start: int, length: int) -> np.ndarray:
        # Silence where the audio ends early (the feature extractor also pads to whole examples).
        segment = waveform[start : start + length]
        return segment if len(segment) else np.zeros(1, dtype=np.float32)

    def post_process_masks(
        self,
        logits: torch.Tensor,
        original_sizes: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        threshold: float = 0.5,
        semantic: bool | None = None,
    ) -> list[list[np.ndarray]]:
        """Model logits -> masks at each frame's original size.

        Args:
            logits (`torch.Tensor` of shape `[C, T, num_labels, h, w]`): segmentation logits.
            original_sizes (`torch.Tensor` of shape `[C, T, 2]`, *optional*): (height, width) per
                frame, as returned by the processor; by default masks keep the logits' size.
            frame_mask (`torch.Tensor` of shape `[C, T]`, *optional*): padded frames (0) are left out.
            threshold (`float`): probability threshold of binary models, in (0, 1).
            semantic (`bool`, *optional*): whether the model predicts class maps, from
                `models.labels.is_semantic_segmentation(model.config)`; by default, whether `logits`
                has more than one channel. A value that disagrees with the channels is an error.

        Returns:
            One list per clip of `[H, W]` uint8 arrays: 0/1 masks (sigmoid > threshold) for
            binary models, class ids (argmax of the logits resized to the frame) for semantic ones.
        """
        if not isinstance(logits, torch.Tensor) or logits.dim() != 5:
            raise ValueError(
                f"`logits` must be a tensor of shape [C, T, num_labels, h, w], got {getattr(logits, 'shape', logits)}"
            )
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"`threshold` must lie in (0, 1), got {threshold}")
        num_clips, clip_length, num_channels = logits.shape[:3]
        if semantic is None:
            semantic = num_channels > 1
        elif semantic != (num_channels > 1):
            kind = "class maps (num_labels > 1)" if semantic else "binary masks (num_labels == 1)"
            raise ValueError(
                f"the model's config says it predicts {kind}, but its logits have {num_channels} channel(s): "
                "set `num_labels` in the config to the number of output channels"
            )
        for name, value, shape in (
            ("original_sizes", original_sizes, (num_clips, clip_length, 2)),
            ("frame_mask", frame_mask, (num_clips, clip_length)),
        ):
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"`{name}` must have shape {list(shape)}, got {list(value.shape)}")
        masks = []
        for clip_index in range(num_clips):
            clip_masks = []
            for frame_index in range(clip_length):
                if frame_mask is not None and not frame_mask[clip_index, frame_index]:
                    continue
                frame_logits = logits[clip_index, frame_index].detach().float()[None]
                if original_sizes is not None:
                    size = tuple(int(v) for v in original_sizes[clip_index, frame_index])
                    frame_logits = F.interpolate(
                        frame_logits, size=size, mode="bilinear", align_corners=False
                    )
                if semantic:
                    mask = frame_logits[0].argmax(dim=0)
                else:
                    # sigmoid(x) > threshold  <=>  x > logit(threshold), without a sigmoid per pixel.
                    mask = frame_logits[0, 0] > math.log(threshold / (1.0 - threshold))
                clip_masks.append(mask.to(torch.uint8).numpy())
            masks.append(clip_masks)
        return masks


def processor_for(
    config: PreTrainedConfig, *, image_size: int = 224, num_frames: int = 5
) -> AudioVisualProcessor:
    """The default processor of a segmentation model: frames resized to `image_size` and
    ImageNet-normalised, audio through its encoder's feature extractor (`audio_feature_extractor_for`),
    clips of `num_frames`. Training saves it next to the model."""
    return AudioVisualProcessor(
        AudioVisualImageProcessor(size=image_size), audio_feature_extractor_for(config), num_frames=num_frames
    )


__all__ = ["AudioVisualProcessor", "audio_feature_extractor_for", "processor_for"]
