"""`avs-models evaluate MODEL_DIR DATA_DIR --subset s4 --split test`: metrics table and JSON."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="mIoU and F-score of a saved model on an AVSBench split",
        description=(
            "Scores a saved model on an AVSBench split with the official mIoU and F-score (or another metric "
            "definition), optionally also under audio or frame noise; prints a table and the JSON results."
        ),
    )
    parser.add_argument("model_dir", help="a save_pretrained folder")
    parser.add_argument("data_dir", help="AVSBench in the official layout, or an exported dataset")
    parser.add_argument(
        "--subset", choices=("s4", "ms3", "avss"), default="s4", help="AVSBench subset (default s4)"
    )
    parser.add_argument(
        "--split", choices=("train", "val", "test"), default="test", help="split to score (default test)"
    )
    parser.add_argument(
        "--definition", default="official", help="official | per_frame (S4/MS3) | dataset (AVSS)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="frame size; by default the processor saved with the model decides (224 if it has none)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="clips per forward pass (default 1)")
    parser.add_argument("--per-category", action="store_true", help="also print one row per category")
    parser.add_argument(
        "--noise-snr",
        type=float,
        nargs="+",
        default=[],
        help="also evaluate with Gaussian noise added to the audio at these SNRs (dB)",
    )
    parser.add_argument(
        "--frame-noise",
        type=float,
        nargs="+",
        default=[],
        help="also evaluate with Gaussian noise of these standard deviations on the frames (pixels in [0, 1])",
    )
    parser.add_argument("--json", dest="json_path", help="also write the results to this JSON file")
    parser.set_defaults(func=run)


def saved_processor(model_dir: str):
    """The `AudioVisualProcessor` saved next to the model (as training does), or None."""
    from avs_models.processing import AudioVisualProcessor

    if not (Path(model_dir) / "processor_config.json").is_file():
        return None
    return AudioVisualProcessor.from_pretrained(model_dir)


def run(args) -> int:
    from avs_models.evaluation import evaluate_split, format_table
    from avs_models.models.auto import AutoModelForAudioVisualSegmentation

    if not Path(args.model_dir).is_dir():
        raise FileNotFoundError(f"MODEL_DIR {args.model_dir!r} is not a folder")
    model = AutoModelForAudioVisualSegmentation.from_pretrained(args.model_dir)
    options = {
        # An explicit --image-size replaces the saved processor.
        "processor": saved_processor(args.model_dir) if args.image_size is None else None,
        "image_size": args.image_size or 224,
        "batch_size": args.batch_size,
        "definition": args.definition,
        "progress": True,
    }
    results = {"clean": evaluate_split(model, args.data_dir, args.subset, args.split, **options)}
    for snr in args.noise_snr:
        results[f"audio noise {snr:g} dB"] = evaluate_split(
            model, args.data_dir, args.subset, args.split, snr_db=snr, **options
        )
    for std in args.frame_noise:
        results[f"frame noise std {std:g}"] = evaluate_split(
            model, args.data_dir, args.subset, args.split, frame_noise_std=std, **options
        )
    rows = [{"setting": name, **result} for name, result in results.items()]
    if args.per_category:
        for name, result in results["clean"].get("per_category", {}).items():
            rows.append({"setting": f"  {name}", **result})
    print(f"{args.subset} {args.split}, {results['clean']['definition']} definition")
    print(format_table(rows))
    summary = {
        name: {key: value for key, value in result.items() if args.per_category or key != "per_category"}
        for name, result in results.items()
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text)
    return 0
