"""`accelerate launch -m avs_models.train CONFIG [key=value ...] [--resume] [--verbose]`.

CONFIG is a YAML/JSON file or a preset name (pcmanet_s4, pcmanet_ms3, pcmanet_avss, c3n_s4,
c3n_ms3); overrides set nested keys with dots, e.g. `data_dir=data optimizer.learning_rate=1e-3`.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config file (YAML/JSON) or preset name")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, dots for nested keys")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints/latest")
    parser.add_argument(
        "--resume-ignore-config",
        action="store_true",
        help="with --resume: continue even if settings that change the run (batch size, data, model, seed, ...) "
        "differ from the checkpoint's",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="log every step, checkpoint and library message from every process (default: one progress bar)",
    )


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from avs_models.training import load_training_config, train
    from avs_models.training.trainer import configure_logging

    if args.resume_ignore_config and not args.resume:
        raise ValueError("--resume-ignore-config only applies with --resume")
    configure_logging(verbose=args.verbose)
    config = load_training_config(args.config, args.overrides)
    state = train(
        config, resume=args.resume, ignore_config_changes=args.resume_ignore_config, verbose=args.verbose
    )
    if PartialState().is_main_process:
        best = state["best_miou"]
        print(
            f"finished at step {state['global_step']}; best validation mIoU: "
            f"{'none' if best is None else f'{best:.4f}'}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m avs_models.train ...` is `avs-models train ...` (same options, same one-line errors)."""
    from avs_models.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
