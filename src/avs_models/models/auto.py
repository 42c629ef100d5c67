"""`AutoModelForAudioVisualSegmentation`: the Auto class for this package's task.

Transformers has no audio-visual segmentation task, so the package adds its own Auto class built
on Transformers' `_BaseAutoModelClass` machinery. Each model family registers itself here (and
with `AutoConfig` / `AutoModel`) when `avs_models` is imported.
"""

from collections import OrderedDict

from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping, auto_class_update
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

MODEL_FOR_AUDIO_VISUAL_SEGMENTATION_MAPPING = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())


class AutoModelForAudioVisualSegmentation(_BaseAutoModelClass):
    _model_mapping = MODEL_FOR_AUDIO_VISUAL_SEGMENTATION_MAPPING


AutoModelForAudioVisualSegmentation = auto_class_update(
    AutoModelForAudioVisualSegmentation, head_doc="audio-visual segmentation"
)
