"""`accelerate launch -m avs_models.train CONFIG [key=value ...] [--resume]`.

CONFIG is a YAML/JSON file or a preset name (pcmanet_s4, pcmanet_ms3, pcmanet_avss, c3n_s4,
c3n_ms3); overrides set nested keys with dots, e.g. `data_dir=data optimizer.learning_rate=1e-3`.
"""

from __future__ import annotations

import argparse
import logging
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config file (YAML/JSON) or preset name")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, dots for nested keys")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints/latest")


def run(args: argparse.Namespace) -> int:
    from avs_models.training import load_training_config, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_training_config(args.config, args.overrides)
    state = train(config, resume=args.resume)
    best = state["best_miou"]
    print(
        f"finished at step {state['global_step']}; best validation mIoU: {'none' if best is None else f'{best:.4f}'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avs_models.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
