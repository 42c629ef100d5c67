"""Value types for the sub-commands' options: argparse calls them on the text given and turns their
`ArgumentTypeError` into a one-line usage error naming the option (exit code 2)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number of at least 1 (a batch size, a count)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number of at least 0 (an index, 0 = the first)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (0 = the first), got {text}")
    return value


def probability(text: str) -> float:
    """A probability strictly between 0 and 1 (a threshold)."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability strictly between 0 and 1, got {text}")
    return value


def opacity(text: str) -> float:
    """An opacity in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1] (0 transparent, 1 opaque), got {text}")
    return value


def port(text: str) -> int:
    """A TCP port number, in [1, 65535]."""
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in [1, 65535], got {text}")
    return value


__all__ = ["non_negative_int", "opacity", "port", "positive_int", "probability"]
