from .configuration_avsegformer import AVSegFormerConfig
from .modeling_avsegformer import (
    AVSegFormerForAudioVisualSegmentation,
    AVSegFormerPreTrainedModel,
    AVSegFormerSegmentationOutput,
)

__all__ = [
    "AVSegFormerConfig",
    "AVSegFormerForAudioVisualSegmentation",
    "AVSegFormerPreTrainedModel",
    "AVSegFormerSegmentationOutput",
]
