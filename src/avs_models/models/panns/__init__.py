"""PANNs Cnn14: an AudioSet audio classifier used by C3N (configuration, feature extractor, models)."""

from .configuration_panns import PannsConfig
from .feature_extraction_panns import PannsFeatureExtractor
from .modeling_panns import (
    PannsAudioClassifierOutput,
    PannsForAudioClassification,
    PannsModel,
    PannsModelOutput,
    PannsPreTrainedModel,
)

__all__ = [
    "PannsAudioClassifierOutput",
    "PannsConfig",
    "PannsFeatureExtractor",
    "PannsForAudioClassification",
    "PannsModel",
    "PannsModelOutput",
    "PannsPreTrainedModel",
]
