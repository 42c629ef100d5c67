"""`avs-models plot RUN_DIR`: curves of a training run (loss, validation scores, PCMANet's kept tokens) as PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

# File written for each figure of `plot_training_history`.
FILE_NAMES = {
    "loss": "training_loss.png",
    "validation": "training_validation.png",
    "kept_tokens": "training_kept_tokens.png",
}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="curves of a training run: loss, validation mIoU/F-score, PCMANet's kept-token ratios",
        description=(
            "Reads the history a training run logs (RUN_DIR/trainer_state.json, or its latest checkpoint's while "
            "it runs) and draws training_loss.png (loss per step, and each stage's loss for PCMANet), "
            "training_validation.png (mIoU and F-score per epoch, when the run validates) and "
            "training_kept_tokens.png (PCMANet: the kept-token ratio of each stage's confidence mask per step, "
            "paper Fig. 8). Needs matplotlib (pip install 'avs-models[plot]')."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the output_dir of a training run")
    parser.add_argument("--out", metavar="OUT_DIR", help="where the PNGs go (default: RUN_DIR/plots)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from avs_models.plotting import load_training_history, plot_training_history, save_figure

    history, source = load_training_history(args.run_dir)
    out_dir = Path(args.out) if args.out else Path(args.run_dir) / "plots"
    figures = plot_training_history(history)
    paths = [save_figure(figure, out_dir / FILE_NAMES[name]) for name, figure in figures.items()]
    print(f"read {source}; wrote {len(paths)} plots to {out_dir}:", *(path.name for path in paths))
    return 0
