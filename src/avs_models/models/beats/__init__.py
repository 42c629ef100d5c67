"""BEATs: the AudioSet-trained audio Transformer used by C3N (configuration, feature extractor, models)."""

from .configuration_beats import BeatsConfig
from .feature_extraction_beats import BeatsFeatureExtractor
from .modeling_beats import (
    BeatsAudioClassifierOutput,
    BeatsForAudioClassification,
    BeatsModel,
    BeatsModelOutput,
    BeatsPreTrainedModel,
)

__all__ = [
    "BeatsAudioClassifierOutput",
    "BeatsConfig",
    "BeatsFeatureExtractor",
    "BeatsForAudioClassification",
    "BeatsModel",
    "BeatsModelOutput",
    "BeatsPreTrainedModel",
]
