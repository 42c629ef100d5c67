"""BEATs: the AudioSet-trained audio Transformer used by C3N (configuration, feature extractor, models)."""

from .configuration_beats import BeatsConfig

__all__ = ["BeatsConfig"]
