"""Training with Accelerate: configuration files, presets and the training loop."""

from .config import PRESETS, TrainingConfig, apply_overrides, load_training_config
from .trainer import AVSBenchSplit, Trainer, evaluate_model, train

__all__ = [
    "PRESETS",
    "AVSBenchSplit",
    "Trainer",
    "TrainingConfig",
    "apply_overrides",
    "evaluate_model",
    "load_training_config",
    "train",
]
