"""`avs-models predict`: segment the sounding objects of a video; write masks, overlays and a JSON summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment the sounding objects of a video (masks, overlays, JSON summary)",
        description=(
            "Runs the audio-visual segmentation model in MODEL_DIR (with its saved AudioVisualProcessor) on "
            "VIDEO and writes to OUT_DIR: masks/ (one PNG per second: 0/255 for binary models, class ids for "
            "semantic ones), overlays/ (PNG per second), overlay.gif, overlay.mp4 (with the video's audio) "
            "and summary.json."
        ),
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR")
    parser.add_argument("video", metavar="VIDEO")
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder (created if missing)")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold of binary models")
    parser.add_argument("--clip-batch-size", type=int, default=4, help="clips per forward pass (default 4)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    import avs_models  # noqa: F401  (registers the task and the Auto classes)
    from avs_models.processing.pipeline_audio_visual_segmentation import PIPELINE_TASK
    from avs_models.processing.video_io import read_video
    from avs_models.processing.visualization import overlay_mask, save_gif, save_mp4, save_png_frames

    model_dir, video, out_dir = Path(args.model_dir), Path(args.video), Path(args.out)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder not found: {model_dir}")
    segmenter = pipeline(PIPELINE_TASK, model=str(model_dir))
    results = segmenter(str(video), threshold=args.threshold, clip_batch_size=args.clip_batch_size)
    clip = read_video(
        video, segmenter.processor.frame_time, segmenter.processor.feature_extractor.sampling_rate
    )

    is_semantic = segmenter.model.config.num_labels > 1
    masks_dir = out_dir / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    overlays, frames_summary = [], []
    for index, (result, frame) in enumerate(zip(results, clip.frames)):
        mask = result["mask"]
        mask_path = masks_dir / f"mask_{index:04d}.png"
        Image.fromarray(mask if is_semantic else (mask * 255).astype(np.uint8)).save(mask_path)
        overlays.append(overlay_mask(frame, mask, alpha=args.alpha))
        entry = {
            "time": result["time"],
            "mask": str(mask_path.relative_to(out_dir)),
            "overlay": f"overlays/frame_{index:04d}.png",
            "foreground_fraction": float((mask > 0).mean()),
        }
        if is_semantic:
            entry.update(labels=result["labels"], scores=result["scores"])
        frames_summary.append(entry)
    save_png_frames(overlays, out_dir / "overlays")
    save_gif(overlays, out_dir / "overlay.gif")
    save_mp4(overlays, out_dir / "overlay.mp4", clip.waveform, clip.sampling_rate)
    summary = {
        "model": str(model_dir),
        "video": str(video),
        "model_type": segmenter.model.config.model_type,
        "num_labels": segmenter.model.config.num_labels,
        "threshold": args.threshold if not is_semantic else None,
        "num_frames": len(frames_summary),
        "frames": frames_summary,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {len(frames_summary)} masks and overlays to {out_dir}")
    return 0
