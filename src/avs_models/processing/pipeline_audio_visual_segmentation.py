"""The `audio-visual-segmentation` pipeline: a video file in, per-second sounding-object masks out."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import Pipeline

from ..models.audio_utils import validated_count

PIPELINE_TASK = "audio-visual-segmentation"


class AudioVisualSegmentationPipeline(Pipeline):
    """Segment the objects making the sound in a video, one mask per second.

    ```python
    from transformers import pipeline
    import avs_models  # registers the task

    segmenter = pipeline("audio-visual-segmentation", model="path/to/pcmanet")
    frames = segmenter("clip.mp4")
    ```

    Input: a video path, or a dict of `AudioVisualProcessor` keyword arguments (`frames`,
    `audio`, `sampling_rate`, or `frames_dir`, `audio_path`). The processor splits it into clips
    of `num_frames` seconds; clips run through the model `clip_batch_size` at a time (with a
    progress bar when there are more than `clip_batch_size` clips).

    Returns one dict per second of input: `time` (seconds of the chosen frame), `mask` (`[H, W]`
    uint8 at the frame's size: 0/1 for binary models, class ids for semantic ones) and, for
    semantic models, `labels` (names of the classes present, background excluded) with their
    `scores` (mean probability of the class over its pixels).

    Call parameters: `threshold` (binary models, default 0.5), `clip_batch_size` (default 4),
    `show_progress` (default: when there is more than one batch).
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, threshold=None, clip_batch_size=None, show_progress=None, **kwargs):
        if kwargs:
            raise TypeError(f"unexpected arguments for the {PIPELINE_TASK} pipeline: {sorted(kwargs)}")
        forward_params, postprocess_params = {}, {}
        if clip_batch_size is not None:
            forward_params["clip_batch_size"] = validated_count("clip_batch_size", clip_batch_size)
        if show_progress is not None:
            forward_params["show_progress"] = show_progress
        if threshold is not None:
            postprocess_params["threshold"] = threshold
        return {}, forward_params, postprocess_params

    def preprocess(self, inputs):
        if isinstance(inputs, (str, Path)):
            return self.processor(inputs)
        if isinstance(inputs, dict):
            return self.processor(**inputs)
        raise TypeError(
            "the pipeline takes a video path or a dict of AudioVisualProcessor arguments "
            f"(frames, audio, sampling_rate, frames_dir, audio_path), got {type(inputs).__name__}"
        )

    def _forward(self, model_inputs, clip_batch_size: int = 4, show_progress: bool | None = None):
        accepted = inspect.signature(self.model.forward).parameters
        audio_key = self.processor.feature_extractor.model_input_names[0]
        if audio_key not in accepted or getattr(self.model, "audio_encoder", None) is None:
            raise ValueError(
                f"{type(self.model).__name__} has no audio encoder taking `{audio_key}`: the {PIPELINE_TASK} "
                "pipeline needs a model that embeds its audio itself (config.audio_config set, e.g. a "
                "converted checkpoint with --vggish-dir / --audio-encoder-dir)"
            )
        num_clips = len(model_inputs["pixel_values"])
        starts = range(0, num_clips, clip_batch_size)
        if show_progress is None:
            show_progress = len(starts) > 1
        logits = []
        for start in tqdm(starts, desc="clips", unit="batch", disable=not show_progress):
            batch = {
                "pixel_values": model_inputs["pixel_values"][start : start + clip_batch_size],
                audio_key: model_inputs[audio_key][start : start + clip_batch_size],
            }
            if "frame_mask" in accepted:
                batch["frame_mask"] = model_inputs["frame_mask"][start : start + clip_batch_size]
            logits.append(self.model(**batch).logits.float())
        return {
            "logits": torch.cat(logits),
            "frame_mask": model_inputs["frame_mask"],
            "original_sizes": model_inputs["original_sizes"],
            "frame_times": model_inputs["frame_times"],
        }

    def postprocess(self, model_outputs, threshold: float = 0.5):
        logits, frame_mask = model_outputs["logits"], model_outputs["frame_mask"]
        masks = self.processor.post_process_masks(
            logits, original_sizes=model_outputs["original_sizes"], frame_mask=frame_mask, threshold=threshold
        )
        is_semantic = logits.shape[2] > 1
        id2label = self.model.config.id2label or {}
        results = []
        for clip_index, clip_masks in enumerate(masks):
            real_frames = torch.nonzero(frame_mask[clip_index]).flatten().tolist()
            for frame_index, mask in zip(real_frames, clip_masks):
                result = {"time": float(model_outputs["frame_times"][clip_index, frame_index]), "mask": mask}
                if is_semantic:
                    probabilities = torch.softmax(logits[clip_index, frame_index], dim=0)
                    result.update(self._class_scores(probabilities, mask, id2label))
                results.append(result)
        return results

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


__all__ = ["PIPELINE_TASK", "AudioVisualSegmentationPipeline", "register_pipeline"]
