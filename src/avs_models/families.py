"""Facts about each model family, kept in one data file (`families.json`, package data): the paper,
the official repository the converter reads checkpoints from, the license, the parity figure, the
official test batch of the F-score, the family's known limits and its citation.

The metrics read the official F-score batch from here and the model cards (`avs_models.hub`)
everything else; a new family adds one entry, keyed by its `model_type`.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files


@cache
def model_families() -> dict[str, dict]:
    """Every family's facts, keyed by `model_type`."""
    return json.loads(files("avs_models").joinpath("families.json").read_text(encoding="utf-8"))


def family_facts(model_type: str) -> dict | None:
    """The facts of the family of `model_type`, or `None` for a model type the package does not define."""
    return model_families().get(model_type)


__all__ = ["family_facts", "model_families"]
