"""The `avs-models` command line.

Each sub-command lives in its own module under `avs_models.commands` and exposes
`add_parser(subparsers)`, which registers its arguments and sets `func` to the function to run.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES: list[str] = ["make_synthetic", "prepare_avsbench", "predict", "train", "evaluate", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avs-models", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"avs_models.commands.{module_name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
