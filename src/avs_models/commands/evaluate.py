"""`avs-models evaluate MODEL_DIR [MODEL_DIR ...] DATA_DIR --subset s4 --split test`: metrics table and JSON.

With several model folders, every model is evaluated on the same split and one comparison table
is printed (and, with `--per-category`, one table of categories by model).
"""

from __future__ import annotations

import json
from pathlib import Path

from avs_models.commands.arguments import positive_int
from avs_models.commands.inference_options import add_inference_options, inference_options


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="mIoU and F-score of saved models on an AVSBench split",
        description=(
            "Scores a saved model on an AVSBench split with the official mIoU and F-score (or another metric "
            "definition), optionally also under audio or frame noise; prints a table and the JSON results."
        ),
    )
    parser.add_argument(
        "model_dirs", nargs="+", metavar="MODEL_DIR", help="save_pretrained folders (several: a comparison)"
    )
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
        "--fscore-batch-videos",
        type=positive_int,
        help="videos per official F-score batch (the F-score is maximised per test batch); by default "
        "each model family's official test batch (1 for PCMANet and C3N)",
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        help="frame size; by default the processor saved with the model decides (224 if it has none)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        help="clips per forward pass (default 1); changes no score",
    )
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
    parser.add_argument(
        "--frame-noise-snr",
        type=float,
        nargs="+",
        default=[],
        help="also evaluate with Gaussian noise on the frames at these SNRs (dB), as C3N's Table VII",
    )
    parser.add_argument(
        "--plot",
        metavar="DIR",
        help="draw the noise sweeps into DIR: robustness.png (mIoU and F-score against the noise level) and, "
        "per model and kind of noise, a strip of the split's first clip's first frame and its mask at each level "
        "(needs matplotlib: pip install 'avs-models[plot]')",
    )
    parser.add_argument("--json", dest="json_path", help="also write the results to this JSON file")
    add_inference_options(parser)
    parser.set_defaults(func=run)


def saved_processor(model_dir: str):
    """The `AudioVisualProcessor` saved next to the model (as training does), or None."""
    from avs_models.processing import AudioVisualProcessor

    if not (Path(model_dir) / "processor_config.json").is_file():
        return None
    return AudioVisualProcessor.from_pretrained(model_dir)


def evaluate_model_dir(model_dir: str, args, strip_suffix: str = "") -> dict[str, dict]:
    """Every requested setting (clean, audio noise, frame noise) of one saved model; with `--plot`, also
    its frame strips (`robustness_frames_*{strip_suffix}.png`)."""
    from accelerate import Accelerator

    from avs_models.data import frames_per_clip
    from avs_models.evaluation import evaluate_split
    from avs_models.inference_optimization import optimize_for_inference
    from avs_models.models.auto import AutoModelForAudioVisualSegmentation
    from avs_models.processing import processor_for
    from avs_models.training.trainer import library_progress_bars

    with library_progress_bars(False):  # one progress bar per evaluation, none for loading
        model = AutoModelForAudioVisualSegmentation.from_pretrained(model_dir)
    options = {
        # An explicit --image-size replaces the saved processor.
        "processor": saved_processor(model_dir) if args.image_size is None else None,
        "image_size": args.image_size or 224,
        "batch_size": args.batch_size,
        "definition": args.definition,
        "fscore_batch_videos": args.fscore_batch_videos,
        "progress": True,
    }
    speed = inference_options(args)
    if speed["precision"] != "fp32" or speed["compile"]:
        # Prepared once for every setting (int8 calibrates once), with the processor of the split's clips.
        options["processor"] = options["processor"] or processor_for(
            model.config, image_size=options["image_size"], num_frames=frames_per_clip(args.subset)
        )
        # On the device evaluate_split runs on: fp16 is for GPUs, int8 for CPUs.
        device = Accelerator().device
        model = optimize_for_inference(model.to(device), processor=options["processor"], **speed)
    settings = [("clean", {})]
    settings += [(f"audio noise {snr:g} dB", {"snr_db": snr}) for snr in args.noise_snr]
    settings += [(f"frame noise std {std:g}", {"frame_noise_std": std}) for std in args.frame_noise]
    settings += [(f"frame noise {snr:g} dB", {"frame_snr_db": snr}) for snr in args.frame_noise_snr]
    results = {
        name: evaluate_split(model, args.data_dir, args.subset, args.split, **options, **perturbation)
        for name, perturbation in settings
    }
    if args.plot:
        write_frame_strips(model, model_dir, args, dict(settings), options["processor"], strip_suffix)
    return results


def write_frame_strips(
    model, model_dir: str, args, settings: dict[str, dict], processor, suffix: str
) -> None:
    """C3N's Fig. 10: the first clip's first frame and the predicted mask, clean and at each noise level."""
    from avs_models.evaluation import perturbed_examples
    from avs_models.plotting import plot_robustness_frames, save_figure

    for kind, keys in (("audio_noise", ("snr_db",)), ("frame_noise", ("frame_snr_db", "frame_noise_std"))):
        chosen = {name: p for name, p in settings.items() if not p or any(key in p for key in keys)}
        if len(chosen) < 2:
            continue
        examples = perturbed_examples(
            model,
            args.data_dir,
            args.subset,
            args.split,
            chosen,
            processor=processor,
            image_size=args.image_size or 224,
        )
        title = f"{model_dir}: {args.split} clip 1, frame 1, {kind.replace('_', ' ')}"
        path = Path(args.plot) / f"robustness_frames_{kind}{suffix}.png"
        print("wrote", save_figure(plot_robustness_frames(examples, title), path))


def run(args) -> int:
    from avs_models.evaluation import describe_definition, format_category_comparison, format_table
    from avs_models.hub import record_evaluation

    for model_dir in args.model_dirs:
        if not Path(model_dir).is_dir():
            raise FileNotFoundError(f"MODEL_DIR {model_dir!r} is not a folder")
    if repeated := sorted({d for d in args.model_dirs if args.model_dirs.count(d) > 1}):
        raise ValueError(f"MODEL_DIR given more than once: {', '.join(repeated)}")
    inference_options(args)  # options that do not go together fail before any model loads
    if args.plot:
        from avs_models.plotting import new_figure

        if not (args.noise_snr or args.frame_noise or args.frame_noise_snr):
            raise ValueError(
                "--plot draws noise sweeps: give --noise-snr, --frame-noise-snr or --frame-noise"
            )
        new_figure(1, 1)  # fails before evaluating, with the install hint, where matplotlib is missing
    # One model in memory at a time.
    several = len(args.model_dirs) > 1
    results = {
        model_dir: evaluate_model_dir(model_dir, args, f"_{number}" if several else "")
        for number, model_dir in enumerate(args.model_dirs, start=1)
    }

    print(f"{args.subset} {args.split}")
    if args.precision != "fp32" or args.compile:
        print(f"precision {args.precision}{', compiled' if args.compile else ''}")
    if len(results) == 1:
        (model_results,) = results.values()
        print(describe_definition(model_results["clean"]))
        rows = [{"setting": name, **result} for name, result in model_results.items()]
        if args.per_category:
            for name, result in model_results["clean"].get("per_category", {}).items():
                rows.append({"setting": f"  {name}", **result})
        print(format_table(rows))
        summary = _without_categories(model_results, args.per_category)
    else:
        definitions = {describe_definition(result["clean"]) for result in results.values()}
        print(*sorted(definitions), sep="\n")
        rows = [
            {
                "model": f"{number} {model_dir}"
                if setting == "clean"
                else f"{number} {model_dir}, {setting}",
                **result,
            }
            for number, (model_dir, settings) in enumerate(results.items(), start=1)
            for setting, result in settings.items()
        ]
        print(format_table(rows, label="model"))
        if args.per_category:
            print(format_category_comparison({name: settings["clean"] for name, settings in results.items()}))
        summary = {
            name: _without_categories(settings, args.per_category) for name, settings in results.items()
        }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text)
    for model_dir, settings in results.items():  # the clean scores go into each model's card (model-index)
        if settings["clean"]["precision"] != "fp32":
            print(f"model card not updated: {model_dir} was scored in {settings['clean']['precision']}")
            continue
        print("model card updated:", record_evaluation(model_dir, settings["clean"], args.data_dir))
    if args.plot:
        from avs_models.plotting import plot_robustness, save_figure

        names = {model_dir: f"{number} {model_dir}" for number, model_dir in enumerate(results, start=1)}
        figure = plot_robustness({names[model_dir]: settings for model_dir, settings in results.items()})
        print("wrote", save_figure(figure, Path(args.plot) / "robustness.png"))
    return 0


def _without_categories(settings: dict[str, dict], per_category: bool) -> dict[str, dict]:
    return {
        name: {key: value for key, value in result.items() if per_category or key != "per_category"}
        for name, result in settings.items()
    }
