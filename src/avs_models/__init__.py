"""avs-models: audio-visual segmentation models as Hugging Face Transformers models.

Importing the package registers every model family with `AutoConfig`, `AutoModel` and
`AutoModelForAudioVisualSegmentation`.
"""

from . import _import_notices  # noqa: F401  (first: quiets torchao's notices before Transformers imports it)

# isort: split
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModel,
    AutoModelForAudioClassification,
    AutoProcessor,
)

from .explanation import explain
from .hub import push_folder, record_evaluation, render_model_card, write_model_card
from .inference_optimization import InferenceModel, optimize_for_inference
from .models.auto import AutoModelForAudioVisualSegmentation
from .models.avsegformer import (
    AVSegFormerConfig,
    AVSegFormerForAudioVisualSegmentation,
    AVSegFormerSegmentationOutput,
)
from .models.beats import BeatsConfig, BeatsFeatureExtractor, BeatsForAudioClassification, BeatsModel
from .models.c3n import C3NConfig, C3NForAudioVisualSegmentation
from .models.panns import PannsConfig, PannsFeatureExtractor, PannsForAudioClassification, PannsModel
from .models.pcmanet import PCMANetConfig, PCMANetForAudioVisualSegmentation, PCMANetSegmentationOutput
from .models.tpavi import TPAVIConfig, TPAVIForAudioVisualSegmentation, TPAVISegmentationOutput
from .models.vggish import VGGishConfig, VGGishFeatureExtractor, VGGishForAudioClassification, VGGishModel
from .processing import (
    AudioVisualImageProcessor,
    AudioVisualProcessor,
    AudioVisualSegmentationPipeline,
    VideoReader,
    register_pipeline,
)

__version__ = "0.1.0"


def _register(config_class, model_class, segmentation_class=None) -> None:
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    if segmentation_class is not None:
        AutoModelForAudioVisualSegmentation.register(config_class, segmentation_class, exist_ok=True)


# Audio encoders: a bare model (AutoModel), an AudioSet classifier and a feature extractor each.
for _config_class, _model_class, _classifier_class, _feature_extractor_class in (
    (VGGishConfig, VGGishModel, VGGishForAudioClassification, VGGishFeatureExtractor),
    (PannsConfig, PannsModel, PannsForAudioClassification, PannsFeatureExtractor),
    (BeatsConfig, BeatsModel, BeatsForAudioClassification, BeatsFeatureExtractor),
):
    _register(_config_class, _model_class)
    AutoModelForAudioClassification.register(_config_class, _classifier_class, exist_ok=True)
    AutoFeatureExtractor.register(_config_class, _feature_extractor_class, exist_ok=True)

_register(PCMANetConfig, PCMANetForAudioVisualSegmentation, PCMANetForAudioVisualSegmentation)

_register(C3NConfig, C3NForAudioVisualSegmentation, C3NForAudioVisualSegmentation)

_register(AVSegFormerConfig, AVSegFormerForAudioVisualSegmentation, AVSegFormerForAudioVisualSegmentation)
AutoImageProcessor.register(AVSegFormerConfig, AudioVisualImageProcessor, exist_ok=True)
AutoProcessor.register(AVSegFormerConfig, AudioVisualProcessor, exist_ok=True)

_register(TPAVIConfig, TPAVIForAudioVisualSegmentation, TPAVIForAudioVisualSegmentation)

for _config_class in (PCMANetConfig, C3NConfig, TPAVIConfig):
    AutoImageProcessor.register(_config_class, AudioVisualImageProcessor, exist_ok=True)
    AutoProcessor.register(_config_class, AudioVisualProcessor, exist_ok=True)
register_pipeline()  # pipeline("audio-visual-segmentation", ...)

__all__ = [
    "AVSegFormerConfig",
    "AVSegFormerForAudioVisualSegmentation",
    "AVSegFormerSegmentationOutput",
    "AudioVisualImageProcessor",
    "AudioVisualProcessor",
    "AudioVisualSegmentationPipeline",
    "AutoModelForAudioVisualSegmentation",
    "BeatsConfig",
    "BeatsFeatureExtractor",
    "BeatsForAudioClassification",
    "BeatsModel",
    "C3NConfig",
    "C3NForAudioVisualSegmentation",
    "InferenceModel",
    "PCMANetConfig",
    "PCMANetForAudioVisualSegmentation",
    "PCMANetSegmentationOutput",
    "PannsConfig",
    "PannsFeatureExtractor",
    "PannsForAudioClassification",
    "PannsModel",
    "TPAVIConfig",
    "TPAVIForAudioVisualSegmentation",
    "TPAVISegmentationOutput",
    "VGGishConfig",
    "VGGishFeatureExtractor",
    "VGGishForAudioClassification",
    "VGGishModel",
    "VideoReader",
    "__version__",
    "explain",
    "optimize_for_inference",
    "push_folder",
    "record_evaluation",
    "render_model_card",
    "write_model_card",
]
