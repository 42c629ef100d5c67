"""The `audio-visual-segmentation` pipeline: a video file in, per-second sounding-object masks out."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers.pipelines.base import ChunkPipeline, no_collate_fn
from transformers.pipelines.pt_utils import PipelineChunkIterator, PipelineIterator, PipelinePackIterator

from ..inference_optimization import optimize_for_inference
from ..models.audio_utils import validated_count
from ..models.labels import is_semantic_segmentation

PIPELINE_TASK = "audio-visual-segmentation"
# Videos longer than this (s) show a progress bar unless `show_progress` says otherwise.
_PROGRESS_AFTER_SECONDS = 60


@dataclass
class _ClipSeconds:
    """The per-second results of one clip, in a type of its own: Transformers' batching machinery
    passes it through untouched (it rebuilds lists), so batches of clips and single clips stay apart."""

    seconds: list[dict]


class AudioVisualSegmentationPipeline(ChunkPipeline):
    """Segment the objects making the sound in a video, one mask per second.

    ```python
    from transformers import pipeline
    import avs_models  # registers the task

    segmenter = pipeline("audio-visual-segmentation", model="path/to/pcmanet")
    seconds = segmenter("clip.mp4")                                   # one video
    per_video = segmenter(["a.mp4", "b.mp4"], batch_size=4)          # several, 4 clips per forward pass
    for second in segmenter.stream("long.mp4", return_frames=True):  # flat memory, any length
        ...
    ```

    Input: a video path, or a dict of `AudioVisualProcessor` keyword arguments (`frames`,
    `audio`, `sampling_rate`, or `frames_dir`, `audio_path`), or a list of those. The video is
    decoded once, clip by clip (`AudioVisualProcessor.iter_clips`); each clip of `num_frames` seconds
    is one chunk, and `batch_size` clips (of one or several videos) go through the model at a time.

    Returns, per input, one dict per second: `start` (when the second starts) and `time` (when its
    frame is shown), in seconds on the container's clock, `mask` (`[H, W]` uint8 at the frame's upright size: 0/1 for binary models, class ids for
    semantic ones) and, for semantic models, `labels` (names of the classes present, background
    excluded) with their `scores` (mean probability of the class over its pixels); with
    `return_frames=True` also `frame`, the upright RGB frame `[H, W, 3]` that was segmented.

    Call parameters: `threshold` (binary models, in (0, 1), default 0.5), `batch_size` (clips per
    forward pass), `show_progress` (a bar over seconds of video; default: for videos over a minute),
    `return_frames` (default `False`).

    Construction parameters for speed (`avs_models.optimize_for_inference`): `precision` (`"fp32"`,
    `"bf16"`, `"fp16"` on a GPU, `"int8"` on an x86 CPU), `compile` (`torch.compile` with freezing),
    `compile_mode`, and for int8 `calibration` (video paths or processor outputs; by default the
    int8 program saved in the model's folder, else synthetic clips of the processor).
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(
        self,
        *args,
        precision: str = "fp32",
        compile: bool = False,
        compile_mode: str | None = None,
        calibration=None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.inference_model = optimize_for_inference(
            self.model,
            precision,
            compile,
            compile_mode=compile_mode,
            calibration=calibration,
            processor=self.processor,
        )

    def _sanitize_parameters(self, threshold=None, show_progress=None, return_frames=None, **kwargs):
        if kwargs:
            raise TypeError(f"unexpected arguments for the {PIPELINE_TASK} pipeline: {sorted(kwargs)}")
        preprocess_params, forward_params = {}, {}
        if show_progress is not None:
            preprocess_params["show_progress"] = bool(show_progress)
        if return_frames is not None:
            preprocess_params["return_frames"] = bool(return_frames)
        if threshold is not None:
            if (
                isinstance(threshold, bool)
                or not isinstance(threshold, (int, float))
                or not 0 < threshold < 1
            ):
                raise ValueError(f"`threshold` must be a probability in (0, 1), got {threshold!r}")
            forward_params["threshold"] = float(threshold)
        return preprocess_params, forward_params, {}

    def preprocess(self, inputs, show_progress: bool | None = None, return_frames: bool = False):
        if isinstance(inputs, (str, Path)):
            arguments = {"video": inputs}
        elif isinstance(inputs, dict):
            arguments = dict(inputs)
        else:
            raise TypeError(
                "the pipeline takes a video path or a dict of AudioVisualProcessor arguments "
                f"(frames, audio, sampling_rate, frames_dir, audio_path), got {type(inputs).__name__}"
            )
        windows = self.processor.iter_clips(
            clips_per_window=1,
            return_frames=return_frames,
            show_progress=show_progress,
            progress_after_seconds=_PROGRESS_AFTER_SECONDS,
            **arguments,
        )
        # One clip per chunk; a window is yielded once the next one exists, to flag the last.
        previous = None
        for window in windows:
            if previous is not None:
                yield self._chunk(previous, is_last=False)
            previous = window
        yield self._chunk(previous, is_last=True)

    @staticmethod
    def _chunk(window, is_last: bool) -> dict:
        chunk = {key: value for key, value in window.items() if isinstance(value, torch.Tensor)}
        if "frames" in window:
            chunk["frames"] = [window["frames"]]  # one entry per clip, as the other keys
        chunk["is_last"] = is_last
        return chunk

    def _forward(self, model_inputs, threshold: float = 0.5):
        accepted = inspect.signature(self.model.forward).parameters
        audio_key = self.processor.feature_extractor.model_input_names[0]
        if audio_key not in accepted or getattr(self.model, "audio_encoder", None) is None:
            raise ValueError(
                f"{type(self.model).__name__} has no audio encoder taking `{audio_key}`: the {PIPELINE_TASK} "
                "pipeline needs a model that embeds its audio itself (config.audio_config set, e.g. a "
                "converted checkpoint with --vggish-dir / --audio-encoder-dir)"
            )
        batch = {"pixel_values": model_inputs["pixel_values"], audio_key: model_inputs[audio_key]}
        if "frame_mask" in accepted:
            batch["frame_mask"] = model_inputs["frame_mask"]
        logits = self.inference_model(**batch).logits.float()
        # Masks are made here, clip by clip, so that a long video never holds all its logits.
        semantic = is_semantic_segmentation(self.model.config)
        frame_mask = model_inputs["frame_mask"]
        masks = self.processor.post_process_masks(
            logits, model_inputs["original_sizes"].cpu(), frame_mask.cpu(), threshold, semantic=semantic
        )
        id2label = self.model.config.id2label or {}
        frames = model_inputs.get("frames")
        results = []
        for clip_index, clip_masks in enumerate(masks):
            real_frames = torch.nonzero(frame_mask[clip_index]).flatten().tolist()
            seconds = []
            for position, (frame_index, mask) in enumerate(zip(real_frames, clip_masks)):
                second = {
                    "start": float(model_inputs["second_starts"][clip_index, frame_index]),
                    "time": float(model_inputs["frame_times"][clip_index, frame_index]),
                    "mask": mask,
                }
                if semantic:
                    probabilities = torch.softmax(logits[clip_index, frame_index].cpu(), dim=0)
                    second.update(self._class_scores(probabilities, mask, id2label))
                if frames is not None:
                    second["frame"] = frames[clip_index][position]
                seconds.append(second)
            results.append(_ClipSeconds(seconds))
        return {"results": results, "is_last": model_inputs["is_last"]}

    def postprocess(self, model_outputs):
        seconds = []
        for output in model_outputs:
            clips = output["results"]
            for clip in [clips] if isinstance(clips, _ClipSeconds) else clips:
                seconds.extend(clip.seconds)
        return seconds

    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ):
        # ChunkPipeline's iterator, with a collate function for clips (no tokenizer or feature
        # extractor padding: every clip of a processor has the same shape).
        dataset = PipelineChunkIterator(inputs, self.preprocess, preprocess_params)
        collate_fn = no_collate_fn if batch_size == 1 else collate_clips
        dataloader = DataLoader(
            dataset, num_workers=min(num_workers, 1), batch_size=batch_size, collate_fn=collate_fn
        )
        model_iterator = PipelinePackIterator(
            dataloader, self.forward, forward_params, loader_batch_size=batch_size
        )
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def stream(self, inputs, *, batch_size: int | None = None, **kwargs) -> Iterator[dict]:
        """Segment one input second by second: yields the same dicts as `__call__`, as soon as each
        batch of clips is through the model, so memory stays flat however long the video is."""
        batch_size = validated_count(
            "batch_size", batch_size if batch_size is not None else self._batch_size or 1
        )
        preprocess_params, forward_params, _ = self._sanitize_parameters(**kwargs)
        preprocess_params = {**self._preprocess_params, **preprocess_params}
        forward_params = {**self._forward_params, **forward_params}
        batch = []
        for chunk in self.preprocess(inputs, **preprocess_params):
            batch.append(chunk)
            if len(batch) == batch_size or chunk["is_last"]:
                output = self.forward(collate_clips(batch), **forward_params)
                for clip in output["results"]:
                    yield from clip.seconds
                batch = []

    @staticmethod
    def _class_scores(probabilities: torch.Tensor, mask: np.ndarray, id2label: dict) -> dict:
        # Scores are read at the logits' resolution, where the class map is the argmax.
        class_map = probabilities.argmax(dim=0)
        labels, scores = [], []
        for class_id in sorted(int(c) for c in np.unique(mask) if c != 0):
            pixels = class_map == class_id
            score = (
                float(probabilities[class_id][pixels].mean())
                if pixels.any()
                else float(probabilities[class_id].max())
            )
            labels.append(id2label.get(class_id, str(class_id)))
            scores.append(score)
        return {"labels": labels, "scores": scores}


def collate_clips(chunks: list[dict]) -> dict:
    """Batch the pipeline's clip chunks: tensors are concatenated along the clip axis, per-clip lists
    joined, and `is_last` becomes one flag per clip."""
    batch = {}
    for key in chunks[0]:
        values = [chunk[key] for chunk in chunks]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.cat(values)
        elif key == "is_last":
            batch[key] = values
        else:
            batch[key] = [entry for value in values for entry in value]
    return batch


def register_pipeline() -> None:
    """Register the `audio-visual-segmentation` task with Transformers' `pipeline()`."""
    from transformers.pipelines import PIPELINE_REGISTRY

    from ..models.auto import AutoModelForAudioVisualSegmentation

    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK,
        pipeline_class=AudioVisualSegmentationPipeline,
        pt_model=AutoModelForAudioVisualSegmentation,
        type="multimodal",
    )


__all__ = ["PIPELINE_TASK", "AudioVisualSegmentationPipeline", "collate_clips", "register_pipeline"]
