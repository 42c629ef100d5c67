"""`avs-models train CONFIG [key=value ...] [--resume]` (same as `python -m avs_models.train`)."""

from __future__ import annotations

from avs_models.train import add_arguments, run


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a config file or preset (run under `accelerate launch` for several processes)",
        description=(
            "Trains a model with the settings of CONFIG (a YAML file or a preset name), overridden by key=value "
            "pairs; checkpoints, the best model and its processor go to the output folder. Under "
            "`accelerate launch` it runs on several processes or GPUs."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
