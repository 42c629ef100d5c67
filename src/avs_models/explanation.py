"""Looking inside a model: the papers' explanatory figures, drawn from the model's own intermediate
outputs on one clip of a video.

```python
from avs_models import explain

pictures = explain("path/to/model", "clip.mp4", "explained/")  # {"confidence_masks": Path(...), ...}
```

The video is read by the model's `AudioVisualProcessor` (the same timing rule, rotation and
clip cutting as the pipeline), one clip of `num_frames` seconds goes through the model with its
intermediate outputs, and the figures of its family are written (see `avs_models.plotting`):

- PCMANet: `confidence_masks.png` (paper Fig. 5) and `grouped_attention.png` (Fig. 9).
- C3N: `consensus.png` (paper Fig. 6) and `spatial_attention.png` (Fig. 7).

`explain.json` holds the numbers the figures show (kept-token ratios, top classes, scores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import BatchFeature, PreTrainedModel

from . import plotting
from .models.label_names import AUDIOSET_CLASSES, IMAGENET_1K_CLASSES
from .processing import AudioVisualProcessor, processor_for

SUPPORTED_MODEL_TYPES = ("pcmanet", "c3n")


@dataclass
class ClipExplanation:
    """What a model computed for one clip, as arrays: the numbers `explain`'s figures draw.

    Frame axes hold the clip's real seconds only (no padding). Maps are at the resolution of the
    stage that made them, over the model's input frame (the upright video frame resized).

    Attributes:
        model_type: `"pcmanet"` or `"c3n"`.
        frames: the upright RGB frames `[H, W, 3]` uint8 of the clip, one per second.
        times: when each frame is shown (s, container clock).
        predicted_masks: the model's foreground mask per frame, `[h, w]` 0/1 at the input size.
        confidence_masks: PCMANet, per stage (4, 3, 2): `[T, h, w]`, 1 = unconfident token kept by the
            next QSCA.
        confidence_mask_stages: PCMANet, the stage that made each confidence mask.
        kept_token_ratios: PCMANet, the model's kept-token ratio of each confidence mask.
        grouped_attention: PCMANet, per stage (1 to 4): `[T, G, h, w]` AVGA cosine similarities.
        spatial_attention: C3N, per stage (1 to 4): `[T, h, w]` CCAM spatial attention.
        consensus: C3N, per frame: the top classes, their re-weighted confidences and the unified label.
    """

    model_type: str
    frames: list[np.ndarray]
    times: list[float]
    predicted_masks: list[np.ndarray]
    confidence_masks: list[np.ndarray] | None = None
    confidence_mask_stages: list[int] = field(default_factory=list)
    kept_token_ratios: list[float] | None = None
    grouped_attention: list[np.ndarray] | None = None
    spatial_attention: list[np.ndarray] | None = None
    consensus: list[plotting.ConsensusFrame] | None = None


def load_model_and_processor(
    model: str | Path | PreTrainedModel, processor: AudioVisualProcessor | None = None
) -> tuple[PreTrainedModel, AudioVisualProcessor]:
    """A model (folder or loaded model) and its processor: the one given, else the one saved with the
    model, else the default of its config (`processor_for`)."""
    from .models.auto import AutoModelForAudioVisualSegmentation

    if isinstance(model, (str, Path)):
        from .commands.predict import check_model_dir

        folder = Path(model)
        check_model_dir(folder)
        if processor is None and (folder / "processor_config.json").is_file():
            processor = AudioVisualProcessor.from_pretrained(folder)
        model = AutoModelForAudioVisualSegmentation.from_pretrained(folder)
    if model.config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"explain draws the figures of {' and '.join(SUPPORTED_MODEL_TYPES)} models; this model is "
            f"{model.config.model_type!r}"
        )
    if getattr(model, "audio_encoder", None) is None:
        raise ValueError(
            f"this {model.config.model_type} has no audio encoder (config.audio_config is None), so it cannot "
            "take a video's sound: use a model that embeds its audio itself (e.g. converted with its VGGish)"
        )
    return model.eval(), processor or processor_for(model.config)


def read_clip(
    processor: AudioVisualProcessor, video: str | Path, clip: int = 0, audio: str | Path | None = None
) -> BatchFeature:
    """Clip number `clip` (0 = the first `num_frames` seconds) of a video file, or of a frames folder
    with its sound file `audio`, as the processor prepares it, with its upright frames."""
    if clip < 0:
        raise ValueError(f"clip must be 0 or more, got {clip}")
    video = Path(video)
    if video.is_dir():
        if audio is None:
            raise ValueError(
                f"{video} is a folder of frames: pass its sound file (--audio FILE, or audio= in Python); "
                "videos carry their own"
            )
        arguments = {"frames_dir": video, "audio_path": audio}
    else:
        if not video.exists():
            raise FileNotFoundError(f"video not found: {video}")
        if audio is not None:
            raise ValueError(
                f"--audio (audio=) goes with a frames folder; the video {video} is used with its own sound"
            )
        arguments = {"video": video}
    windows = processor.iter_clips(clips_per_window=1, return_frames=True, **arguments)
    index, window = -1, {"frames": []}
    for index, window in enumerate(windows):
        if index == clip:
            windows.close()
            return window
    seconds = processor.num_frames * index + len(window["frames"])
    raise ValueError(
        f"{video} has {index + 1} clip(s) of {processor.num_frames} s ({seconds} s); clip {clip} is past its end"
    )


def explain_clip(
    model: PreTrainedModel, processor: AudioVisualProcessor, window: BatchFeature
) -> ClipExplanation:
    """Run `model` on one prepared clip (`read_clip`) with its intermediate outputs and collect them."""
    audio_key = processor.feature_extractor.model_input_names[0]
    inputs = {
        "pixel_values": window["pixel_values"].to(model.device, model.dtype),
        audio_key: window[audio_key].to(model.device),
        "frame_mask": window["frame_mask"].to(model.device),
        "output_attentions": True,  # PCMANet's AVGA maps; C3N's CCAM maps and consensus top classes
    }
    # No inference_mode: C3N takes a gradient inside forward (CCAM), which no_grad allows.
    with torch.no_grad():
        output = model(**inputs)
    real = int(window["frame_mask"][0].sum())
    masks = processor.post_process_masks(output.logits.float().cpu(), frame_mask=window["frame_mask"])[0]
    explanation = ClipExplanation(
        model_type=model.config.model_type,
        frames=list(window["frames"]),
        times=[float(time) for time in window["frame_times"][0, :real]],
        predicted_masks=[(mask > 0).astype(np.uint8) for mask in masks],
    )
    if explanation.model_type == "pcmanet":
        explanation.confidence_masks = [_frames(mask, real)[:, 0] for mask in output.confidence_masks]
        explanation.confidence_mask_stages = list(plotting.KEPT_TOKEN_MASK_STAGES)
        explanation.kept_token_ratios = [float(ratio) for ratio in output.kept_token_ratios]
        if output.attentions is not None:  # None without AVGA (the use_avga=False ablation)
            explanation.grouped_attention = [_frames(maps, real) for maps in output.attentions]
    else:
        explanation.spatial_attention = [_frames(maps, real) for maps in output.attentions]
        explanation.consensus = _consensus(model.config, output, real)
    return explanation


def _frames(tensor: torch.Tensor, real: int) -> np.ndarray:
    """The real frames of clip 0 of a `(B, T, ...)` output, as float32 numpy."""
    return tensor[0, :real].detach().float().cpu().numpy()


def consensus_class_names(config) -> tuple[list[str], list[str]]:
    """Names of a C3N's visual and audio classes: the config's, the audio encoder's `id2label`, the
    bundled ImageNet-1k / AudioSet names for heads of that size, else `visual class k` / `audio class k`."""
    from .models.c3n.modeling_c3n import _named_labels

    visual = config.visual_label_names
    if visual is None:
        visual = list(IMAGENET_1K_CLASSES) if config.num_visual_classes == len(IMAGENET_1K_CLASSES) else None
    audio = config.audio_label_names
    if audio is None and config.audio_config is not None:
        audio = _named_labels(config.audio_config)
    if audio is None and config.num_audio_classes == len(AUDIOSET_CLASSES):
        audio = list(AUDIOSET_CLASSES)
    visual = visual or [f"visual class {index}" for index in range(config.num_visual_classes)]
    audio = audio or [f"audio class {index}" for index in range(config.num_audio_classes)]
    return list(visual), list(audio)


def _consensus(config, output, real: int) -> list[plotting.ConsensusFrame] | None:
    if output.consensus_top_visual_classes is None:
        return None
    visual_names, audio_names = consensus_class_names(config)
    visual_classes = _frames(output.consensus_top_visual_classes, real).astype(int)
    audio_classes = _frames(output.consensus_top_audio_classes, real).astype(int)
    visual_confidences = _frames(output.consensus_top_visual_confidences, real)
    audio_confidences = _frames(output.consensus_top_audio_confidences, real)
    pair_scores = _frames(output.consensus_top_pair_scores, real)
    unified = output.unified_labels[0, :real].tolist()
    return [
        plotting.ConsensusFrame(
            visual_classes=[visual_names[index] for index in visual_classes[frame]],
            visual_confidences=visual_confidences[frame].tolist(),
            audio_classes=[audio_names[index] for index in audio_classes[frame]],
            audio_confidences=audio_confidences[frame].tolist(),
            pair_scores=pair_scores[frame],
            unified_label=visual_names[unified[frame]],
        )
        for frame in range(real)
    ]


def draw_explanation(explanation: ClipExplanation, frame: int = 0) -> dict:
    """The figures of an explanation by name (matplotlib `Figure`s); `frame` is the clip's frame shown
    by single-frame figures (AVGA)."""
    if not 0 <= frame < len(explanation.frames):
        raise ValueError(
            f"frame must be in [0, {len(explanation.frames) - 1}] (the clip's real frames), got {frame}"
        )
    figures = {}
    if explanation.confidence_masks is not None:
        figures["confidence_masks"] = plotting.plot_confidence_masks(
            explanation.frames,
            explanation.predicted_masks,
            explanation.confidence_masks,
            explanation.confidence_mask_stages,
            explanation.kept_token_ratios,
            explanation.times,
        )
    if explanation.grouped_attention is not None:
        figures["grouped_attention"] = plotting.plot_grouped_attention(
            explanation.frames[frame],
            [maps[frame] for maps in explanation.grouped_attention],
            [1, 2, 3, 4],
            label=plotting.frame_label(frame, explanation.times),
        )
    if explanation.consensus is not None:
        figures["consensus"] = plotting.plot_consensus(
            explanation.frames, explanation.consensus, explanation.times
        )
    if explanation.spatial_attention is not None:
        figures["spatial_attention"] = plotting.plot_spatial_attention(
            explanation.frames, explanation.spatial_attention, [1, 2, 3, 4], explanation.times
        )
    return figures


def explanation_summary(explanation: ClipExplanation) -> dict:
    """The numbers of an explanation as JSON-ready values."""
    summary: dict = {"model_type": explanation.model_type, "frame_times": explanation.times}
    if explanation.kept_token_ratios is not None:
        summary["kept_token_ratios"] = {
            f"stage {stage}": ratio
            for stage, ratio in zip(explanation.confidence_mask_stages, explanation.kept_token_ratios)
        }
        summary["kept_token_ratio_per_frame"] = {
            f"stage {stage}": masks.mean(axis=(1, 2)).tolist()
            for stage, masks in zip(explanation.confidence_mask_stages, explanation.confidence_masks)
        }
    if explanation.consensus is not None:
        summary["consensus"] = [
            {
                "unified_label": entry.unified_label,
                "top_visual_classes": dict(zip(entry.visual_classes, entry.visual_confidences)),
                "top_audio_classes": dict(zip(entry.audio_classes, entry.audio_confidences)),
                "pair_scores": np.asarray(entry.pair_scores).tolist(),
            }
            for entry in explanation.consensus
        ]
    return summary


def explain(
    model: str | Path | PreTrainedModel,
    video: str | Path,
    out_dir: str | Path,
    *,
    processor: AudioVisualProcessor | None = None,
    audio: str | Path | None = None,
    clip: int = 0,
    frame: int = 0,
) -> dict[str, Path]:
    """Draw the papers' figures of `model` on one clip of `video` into `out_dir`.

    Args:
        model: a folder written by `save_pretrained` (or training), or a loaded PCMANet or C3N with an
            audio encoder.
        video: a video file with sound, or a folder of frames (one per second) with `audio`.
        out_dir: where the PNGs and `explain.json` go (created if missing).
        processor: prepares the video; by default the one saved with the model.
        audio: the sound file going with a frames folder.
        clip: which clip of `num_frames` seconds (0 = the first).
        frame: the clip's frame shown by single-frame figures.

    Returns:
        The written files by name (`confidence_masks`, ..., `summary` for `explain.json`).
    """
    plotting.new_figure(1, 1)  # fails early, with the install hint, where matplotlib is missing
    model, processor = load_model_and_processor(model, processor)
    explanation = explain_clip(model, processor, read_clip(processor, video, clip, audio))
    figures = draw_explanation(explanation, frame)
    out_dir = Path(out_dir)
    paths = {name: plotting.save_figure(figure, out_dir / f"{name}.png") for name, figure in figures.items()}
    summary = {"video": str(video), "clip": clip, **explanation_summary(explanation)}
    paths["summary"] = out_dir / "explain.json"
    paths["summary"].write_text(json.dumps(summary, indent=1))
    return paths


__all__ = [
    "ClipExplanation",
    "consensus_class_names",
    "draw_explanation",
    "explain",
    "explain_clip",
    "explanation_summary",
    "load_model_and_processor",
    "read_clip",
]
