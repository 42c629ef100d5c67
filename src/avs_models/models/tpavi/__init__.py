from .configuration_tpavi import TPAVIConfig
from .modeling_tpavi import (
    TPAVIForAudioVisualSegmentation,
    TPAVIPreTrainedModel,
    TPAVISegmentationOutput,
)

__all__ = [
    "TPAVIConfig",
    "TPAVIForAudioVisualSegmentation",
    "TPAVIPreTrainedModel",
    "TPAVISegmentationOutput",
]
