"""`avs-models train CONFIG [key=value ...] [--resume]` (same as `python -m avs_models.train`)."""

from __future__ import annotations

from avs_models.train import add_arguments, run


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a config file or preset (run under `accelerate launch` for several processes)",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
