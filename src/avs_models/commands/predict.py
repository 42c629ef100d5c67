"""`avs-models predict`: segment the sounding objects of a video; write masks, overlays and a JSON summary."""

from __future__ import annotations

import argparse
import json
import shutil
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from avs_models.commands.arguments import opacity, positive_int, probability
from avs_models.commands.inference_options import add_inference_options, inference_options

# Seconds whose files may wait to be written while the next clips run through the model.
_MAX_PENDING_WRITES = 16
# What a prediction writes into OUT_DIR; an earlier prediction's are replaced only with --overwrite.
PREDICTION_OUTPUTS = ("masks", "overlays", "overlay.gif", "overlay.mp4", "summary.json")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment the sounding objects of a video (masks, overlays, JSON summary)",
        description=(
            "Runs the audio-visual segmentation model in MODEL_DIR (with its saved AudioVisualProcessor) on "
            "INPUT, a video file with sound, or a folder of frames (one per second) with --audio. Writes to "
            "OUT_DIR: masks/ (one PNG per second: 0/255 for binary models, class ids for semantic ones), "
            "overlays/ (PNG per second), overlay.gif, overlay.mp4 (with the input's own audio) and "
            "summary.json. Several video files go one after another through the model loaded once, each "
            "into OUT_DIR/<file name without its suffix>/. A video is decoded once and written as it goes, "
            "so any length fits in memory."
        ),
    )
    parser.add_argument(
        "model_dir", metavar="MODEL_DIR", help="a folder written by save_pretrained (or training)"
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video files with an audio track (one or more), or one folder of frames (with --audio)",
    )
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder (created if missing)")
    parser.add_argument(
        "--audio",
        metavar="FILE",
        help="sound file (wav, flac, mp3, m4a, ...) going with a frames folder; videos use their own",
    )
    parser.add_argument(
        "--threshold",
        type=probability,
        default=0.5,
        help="probability threshold of binary models, in (0, 1) (default 0.5)",
    )
    parser.add_argument(
        "--alpha", type=opacity, default=0.5, help="overlay fill opacity, in [0, 1] (default 0.5)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=4, help="clips per forward pass (default 4)"
    )
    parser.add_argument(
        "--side-by-side", action="store_true", help="overlays show the frame and its overlay side by side"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier prediction in OUT_DIR (else an OUT_DIR holding one is an error)",
    )
    add_inference_options(parser)
    parser.set_defaults(func=run)


def check_model_dir(model_dir: Path) -> None:
    """Refuse a model folder that does not exist or has no `config.json` (predict, app, push)."""
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"model folder not found: {model_dir} (pass a folder written by save_pretrained or avs-models train)"
        )
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json: pass a folder written by save_pretrained")


def _check_inputs(model_dir: Path, sources: list[Path], audio: Path | None, out_dir: Path) -> None:
    from avs_models.processing.video_io import VideoReader, frame_paths

    check_model_dir(model_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} is a file: pass a folder (created if missing)")
    for source in sources:
        if source.is_dir():
            frame_paths(source)  # a folder of videos, or an empty one, is answered here
            if len(sources) > 1:
                raise ValueError(
                    f"{source} is a folder of frames: predict it alone, with --audio "
                    "(several inputs are videos)"
                )
            if audio is None:
                raise ValueError(
                    f"{source} is a folder of frames: pass its sound with --audio FILE "
                    "(videos carry their own)"
                )
        elif not source.exists():
            raise FileNotFoundError(
                f"input not found: {source} (pass a video file, or a frames folder with --audio)"
            )
        elif audio is not None:
            raise ValueError(
                f"--audio goes with a frames folder; the video {source} is used with its own audio track"
            )
        else:
            VideoReader(source)  # opens it and checks its streams: a bad file is answered before any work


def _output_folders(sources: list[Path], out_dir: Path) -> list[Path]:
    """OUT_DIR for one input; OUT_DIR/<name> for each of several, which must have different names."""
    if len(sources) == 1:
        return [out_dir]
    seen: dict[str, Path] = {}
    for source in sources:
        if source.stem in seen:
            raise ValueError(
                f"{seen[source.stem]} and {source} would both write to {out_dir / source.stem}: "
                "predict them in separate runs, or rename one"
            )
        seen[source.stem] = source
    return [out_dir / source.stem for source in sources]


def _earlier_prediction(out_dir: Path, overwrite: bool) -> list[Path]:
    """The outputs of an earlier prediction in `out_dir`, to remove before writing: mixing its masks
    with this one's (a 6 s video's mask_0005.png beside a 4 s video's masks) would misreport."""
    earlier = [out_dir / name for name in PREDICTION_OUTPUTS if (out_dir / name).exists()]
    if earlier and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a prediction ({', '.join(path.name for path in earlier)}): "
            "pass --overwrite to replace it, or choose another --out"
        )
    return earlier


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def run(args: argparse.Namespace) -> int:
    from transformers import pipeline

    import avs_models  # noqa: F401  (registers the task and the Auto classes)
    from avs_models.processing.pipeline_audio_visual_segmentation import PIPELINE_TASK

    model_dir, sources, out_dir = Path(args.model_dir), [Path(item) for item in args.inputs], Path(args.out)
    audio_path = Path(args.audio) if args.audio else None
    _check_inputs(model_dir, sources, audio_path, out_dir)
    speed = inference_options(args)
    out_dirs = _output_folders(sources, out_dir)
    earlier = [_earlier_prediction(folder, args.overwrite) for folder in out_dirs]
    segmenter = pipeline(PIPELINE_TASK, model=str(model_dir), **speed)
    for source, folder, outputs in zip(sources, out_dirs, earlier):
        num_frames = _predict_one(segmenter, source, audio_path, folder, outputs, args, speed)
        print(f"wrote {num_frames} masks and overlays to {folder}")
    return 0


def _predict_one(
    segmenter, source: Path, audio_path: Path | None, out_dir: Path, earlier: list[Path], args, speed: dict
) -> int:
    """Segment one input into `out_dir` (replacing `earlier` once it decodes); returns the masks written."""
    import numpy as np
    from PIL import Image

    from avs_models.models.labels import is_semantic_segmentation
    from avs_models.processing.video_io import read_audio_file
    from avs_models.processing.visualization import (
        AudioSource,
        GifWriter,
        Mp4Writer,
        draw_legend,
        legend_entries,
        mask_palette,
        overlay_mask,
        side_by_side,
    )

    config = segmenter.model.config
    semantic = is_semantic_segmentation(config)
    palette = mask_palette(config.num_labels)
    id2label = {int(k): v for k, v in (config.id2label or {}).items()}
    if source.is_dir():
        inputs = {"frames_dir": source, "audio_path": audio_path}
        waveform, rate = read_audio_file(audio_path)
        audio = AudioSource(waveform=waveform, sampling_rate=rate)
    else:
        inputs, audio = str(source), None  # the video's own audio, once its first second is known

    seconds = segmenter.stream(
        inputs, batch_size=args.batch_size, threshold=args.threshold, return_frames=True, show_progress=True
    )
    masks_dir, overlays_dir = out_dir / "masks", out_dir / "overlays"
    gif = mp4 = None
    frames_summary: list[dict] = []

    def write(index: int, second: dict) -> None:
        mask, frame = second["mask"], second["frame"]
        Image.fromarray(mask if semantic else (mask * 255).astype(np.uint8)).save(
            masks_dir / f"mask_{index:04d}.png"
        )
        overlay = overlay_mask(frame, mask, alpha=args.alpha, palette=palette)
        if semantic:
            overlay = draw_legend(overlay, legend_entries(mask, id2label, palette))
        if args.side_by_side:
            overlay = side_by_side(frame, overlay)
        Image.fromarray(overlay).save(overlays_dir / f"frame_{index:04d}.png")
        gif.add(overlay)
        mp4.add(overlay)

    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=1) as writer:  # writes while the model runs on later clips
        for index, second in enumerate(seconds):
            if index == 0:  # the input decodes: replace an earlier prediction
                _remove(earlier)
                masks_dir.mkdir(parents=True, exist_ok=True)
                overlays_dir.mkdir(parents=True, exist_ok=True)
                audio = audio or AudioSource(video=source, start_time=second["start"])
                gif, mp4 = GifWriter(out_dir / "overlay.gif"), Mp4Writer(out_dir / "overlay.mp4", audio)
            pending.append(writer.submit(write, index, second))
            while len(pending) > _MAX_PENDING_WRITES or (pending and pending[0].done()):
                pending.popleft().result()
            entry = {
                "start": second["start"],
                "time": second["time"],
                "mask": f"masks/mask_{index:04d}.png",
                "overlay": f"overlays/frame_{index:04d}.png",
                "foreground_fraction": float((second["mask"] > 0).mean()),
            }
            if semantic:
                entry.update(labels=second["labels"], scores=second["scores"])
            frames_summary.append(entry)
        while pending:
            pending.popleft().result()
    gif.close()
    mp4.close()
    summary = {
        "model": segmenter.model.name_or_path,  # the MODEL_DIR it was loaded from
        "input": str(source),
        "audio": str(audio_path) if audio_path else None,
        "model_type": config.model_type,
        "num_labels": config.num_labels,
        "threshold": None if semantic else args.threshold,
        "precision": speed["precision"],
        "compiled": speed["compile"],
        "num_frames": len(frames_summary),
        "frames": frames_summary,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return len(frames_summary)
