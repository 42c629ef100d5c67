"""VGGish: the shared audio encoder (configuration, feature extractor, models)."""

from .configuration_vggish import VGGishConfig
from .feature_extraction_vggish import VGGishFeatureExtractor
from .modeling_vggish import (
    VGGishAudioClassifierOutput,
    VGGishForAudioClassification,
    VGGishModel,
    VGGishModelOutput,
    VGGishPreTrainedModel,
)

__all__ = [
    "VGGishAudioClassifierOutput",
    "VGGishConfig",
    "VGGishFeatureExtractor",
    "VGGishForAudioClassification",
    "VGGishModel",
    "VGGishModelOutput",
    "VGGishPreTrainedModel",
]
