"""Training configuration: a YAML/JSON file (or a packaged preset) plus `key=value` overrides."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

import yaml

from avs_models.data import SUBSETS

MIXED_PRECISIONS = ("no", "fp16", "bf16")
PRESETS = (
    "pcmanet_s4",
    "pcmanet_ms3",
    "pcmanet_avss",
    "c3n_s4",
    "c3n_ms3",
    "tpavi_s4",
    "tpavi_ms3",
    "tpavi_avss",
    "avsegformer_s4",
    "avsegformer_ms3",
    "avsegformer_avss",
)


@dataclass
class TrainingConfig:
    """Everything a training run needs; see docs/training.md for each field."""

    subset: str = "s4"
    data_dir: str | None = None
    output_dir: str = "avs-training"
    model: dict = field(default_factory=lambda: {"name_or_path": None, "model_type": "pcmanet", "config": {}})
    optimizer: dict = field(default_factory=lambda: {"name": "adam", "learning_rate": 1e-4})
    batch_size: int = 4
    eval_batch_size: int = 1
    num_epochs: int = 15
    image_size: int = 224
    augmentation: dict | None = None
    seed: int = 0
    checkpoint_steps: int = 0
    # Keep the newest N checkpoints (and the one of the best validation); null keeps every one.
    save_total_limit: int | None = 2
    logging_steps: int = 10
    validation_split: str | None = "val"
    mixed_precision: str = "no"
    report_to: str | None = None
    # DataLoader worker processes per training process; null: one per CPU core available to each
    # process, at most 4.
    num_workers: int | None = None
    # Stochastic depth of the vision backbone (PVT-v2, Swin); null keeps the model config's.
    drop_path_rate: float | None = None
    # The vision backbone gets no update in the first N epochs (AVSegFormer's process.freeze_epochs).
    freeze_backbone_epochs: int = 0
    push_to_hub: str | None = None
    # PCMANet's query selection can leave parameters out of a step's graph, which DDP must allow.
    ddp_find_unused_parameters: bool = True

    def __post_init__(self) -> None:
        if self.subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {self.subset!r}")
        for name in ("batch_size", "eval_batch_size", "num_epochs", "image_size", "logging_steps"):
            if not _is_count(getattr(self, name), minimum=1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not _is_count(self.seed, minimum=0):
            raise ValueError(f"seed must be an integer of 0 or more, got {self.seed!r}")
        if not _is_count(self.checkpoint_steps, minimum=0):
            raise ValueError(
                "checkpoint_steps must be 0 (only each epoch) or a positive integer, "
                f"got {self.checkpoint_steps!r}"
            )
        if self.save_total_limit is not None and not _is_count(self.save_total_limit, minimum=1):
            raise ValueError(
                f"save_total_limit must be a positive integer (checkpoints kept) or null (keep all), "
                f"got {self.save_total_limit!r}"
            )
        if self.num_workers is not None and not _is_count(self.num_workers, minimum=0):
            raise ValueError(
                f"num_workers must be 0 (load in the training process), a positive integer or null (automatic), "
                f"got {self.num_workers!r}"
            )
        if not _is_count(self.freeze_backbone_epochs, minimum=0):
            raise ValueError(
                f"freeze_backbone_epochs must be 0 (train the backbone from the start) or a positive "
                f"integer, got {self.freeze_backbone_epochs!r}"
            )
        if self.drop_path_rate is not None and not (
            isinstance(self.drop_path_rate, (int, float)) and 0 <= self.drop_path_rate < 1
        ):
            raise ValueError(f"drop_path_rate must be in [0, 1) or null, got {self.drop_path_rate!r}")
        if str(self.optimizer.get("name", "adam")).lower() not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer.name must be adam, adamw or sgd, got {self.optimizer.get('name')!r}")
        # Checked when given; where it is not, the trainer's default applies.
        if "learning_rate" in self.optimizer:
            learning_rate = self.optimizer["learning_rate"]
            if (
                isinstance(learning_rate, bool)
                or not isinstance(learning_rate, (int, float))
                or learning_rate <= 0
            ):
                raise ValueError(f"optimizer.learning_rate must be a positive number, got {learning_rate!r}")
        if self.mixed_precision is False:  # YAML reads an unquoted `no` as false
            self.mixed_precision = "no"
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(
                f"mixed_precision must be one of {MIXED_PRECISIONS}, got {self.mixed_precision!r}"
            )
        if self.report_to not in (None, "tensorboard"):
            raise ValueError(f"report_to must be null or 'tensorboard', got {self.report_to!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _is_count(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


# What resuming compares. A checkpoint continues the run its configuration describes: keys that
# change which clips a step sees, their augmentation, the model, the optimiser or the random
# draws must match, or the resumed run silently becomes a different one. The others change only
# where and how the run reports and saves, how fast data loads, or how long it goes on.
RESUME_MUST_MATCH = (
    "subset",
    "data_dir",
    "model",
    "optimizer",
    "batch_size",
    "image_size",
    "augmentation",
    "seed",
    "validation_split",
    "mixed_precision",
    "drop_path_rate",
    "freeze_backbone_epochs",
)
RESUME_MAY_CHANGE = (
    "output_dir",
    "eval_batch_size",
    "num_epochs",
    "checkpoint_steps",
    "save_total_limit",
    "logging_steps",
    "report_to",
    "num_workers",
    "push_to_hub",
    "ddp_find_unused_parameters",
)


def resume_differences(saved: dict, current: dict) -> list[str]:
    """`key: saved -> current` for every resume-relevant difference of two `to_dict()` configs
    (nested keys with dots), plus the number of processes when both name it."""
    differences = []

    def compare(prefix: str, old, new) -> None:
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                compare(f"{prefix}.{key}", old.get(key, "<unset>"), new.get(key, "<unset>"))
        elif old != new:
            differences.append(f"{prefix}: {old!r} -> {new!r}")

    for key in (*RESUME_MUST_MATCH, "num_processes"):
        if key in saved or key in current:
            compare(key, saved.get(key, "<unset>"), current.get(key, "<unset>"))
    return differences


def _read_mapping(source: str) -> dict:
    if source in PRESETS:
        text = resources.files("avs_models.training").joinpath("presets", f"{source}.yaml").read_text()
        return yaml.safe_load(text) or {}
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"training config {source!r} is neither a file nor a preset name ({', '.join(PRESETS)})"
        )
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise TypeError(f"training config {path} must hold a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set `a.b.c=value` entries (values parsed as YAML: numbers, booleans, null, lists)."""
    data = copy.deepcopy(data)
    for override in overrides:
        key, separator, raw_value = override.partition("=")
        if not separator or not key:
            raise ValueError(f"override {override!r} must look like key=value (dots for nested keys)")
        target = data
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise TypeError(f"override {override!r}: {parent!r} is not a mapping")
        target[leaf] = _parse_value(raw_value)
    return data


def _parse_value(raw_value: str):
    value = yaml.safe_load(raw_value)
    if isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; a learning rate is meant.
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_training_config(source: str, overrides: list[str] | None = None) -> TrainingConfig:
    """Read a config file or preset name, apply overrides, and check every key."""
    data = apply_overrides(_read_mapping(source), overrides or [])
    known = {item.name for item in fields(TrainingConfig)}
    if unknown := set(data) - known:
        raise ValueError(f"unknown training config key(s) {sorted(unknown)}; known keys: {sorted(known)}")
    return TrainingConfig(**data)
