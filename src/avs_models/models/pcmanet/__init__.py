from .configuration_pcmanet import PCMANetConfig
from .modeling_pcmanet import (
    PCMANetForAudioVisualSegmentation,
    PCMANetPreTrainedModel,
    PCMANetSegmentationOutput,
)

__all__ = [
    "PCMANetConfig",
    "PCMANetForAudioVisualSegmentation",
    "PCMANetPreTrainedModel",
    "PCMANetSegmentationOutput",
]
