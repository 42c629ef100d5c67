"""The `avs-models` command line.

Each sub-command lives in its own module under `avs_models.commands` and exposes
`add_parser(subparsers)`, which registers its arguments and sets `func` to the function to run.

Errors a user can cause are answered here, once for every sub-command: one line on stderr naming
the problem (the message of the exception, which names the file or option and what to do) and
exit code 2, without a traceback (`--debug` shows it). They are the exceptions the package raises
for bad input, `ValueError` (bad values, unreadable or unsuitable files, wrong options) and
`OSError` (missing files and folders, permissions, a full disk; Transformers' "not a model folder"),
plus argparse's own usage errors. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

COMMAND_MODULES: list[str] = [
    "make_synthetic", "prepare_avsbench", "predict", "train", "evaluate", "demo", "export", "explain", "plot", "app", "push",
]
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
USER_ERROR_EXIT_CODE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (argparse prints the whole usage block first)."""

    def error(self, message: str):
        self.exit(USER_ERROR_EXIT_CODE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _package_version() -> str:
    try:
        return version("avs-models")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="avs-models", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_package_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"avs_models.commands.{module_name}").add_parser(subparsers)
    for subparser in subparsers.choices.values():
        subparser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def one_line(error: BaseException) -> str:
    """An exception's message on one line (some libraries' messages span several)."""
    message = " ".join(str(error).split())
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in message:
        message = f"{message}: {error.filename}"
    return message or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as error:
        if args.debug:
            raise
        print(f"avs-models {args.command}: error: {one_line(error)}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    except KeyboardInterrupt:
        print(f"avs-models {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
