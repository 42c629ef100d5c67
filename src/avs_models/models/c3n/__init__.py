from .configuration_c3n import C3NConfig
from .label_similarity import compute_label_similarity, load_official_similarity_matrix
from .modeling_c3n import C3NForAudioVisualSegmentation, C3NPreTrainedModel, C3NSegmentationOutput

__all__ = [
    "C3NConfig",
    "C3NForAudioVisualSegmentation",
    "C3NPreTrainedModel",
    "C3NSegmentationOutput",
    "compute_label_similarity",
    "load_official_similarity_matrix",
]
