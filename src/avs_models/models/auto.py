"""The package's Auto pieces: `AutoModelForAudioVisualSegmentation`, and the lookup of nested models.

Transformers has no audio-visual segmentation task, so the package adds its own Auto class built
on Transformers' `_BaseAutoModelClass` machinery. Each model family registers itself here (and
with `AutoConfig` / `AutoModel`) when `avs_models` is imported.

Segmentation models embed an audio encoder described by a nested config (`audio_config`), of one
of the package's own types (VGGish, PANNs, BEATs) or of any Transformers audio model.
`sub_config_from_dict` and `sub_model_from_config` resolve it through the table below first and
Transformers' Auto classes second, never through the Auto registry that `import avs_models` fills:
so the Hub copy of a model's code (which includes this module, see `hub_code.py`) builds its
audio encoder where the package is not installed.
"""

from __future__ import annotations

from collections import OrderedDict

from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification, PreTrainedConfig, PreTrainedModel
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping, auto_class_update
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from .beats.configuration_beats import BeatsConfig
from .beats.modeling_beats import BeatsForAudioClassification, BeatsModel
from .panns.configuration_panns import PannsConfig
from .panns.modeling_panns import PannsForAudioClassification, PannsModel
from .vggish.configuration_vggish import VGGishConfig
from .vggish.modeling_vggish import VGGishForAudioClassification, VGGishModel

MODEL_FOR_AUDIO_VISUAL_SEGMENTATION_MAPPING = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())


class AutoModelForAudioVisualSegmentation(_BaseAutoModelClass):
    _model_mapping = MODEL_FOR_AUDIO_VISUAL_SEGMENTATION_MAPPING


AutoModelForAudioVisualSegmentation = auto_class_update(
    AutoModelForAudioVisualSegmentation, head_doc="audio-visual segmentation"
)

# The package's audio encoders: config, bare model (what `AutoModel` builds), AudioSet classifier
# (what `AutoModelForAudioClassification` builds).
AUDIO_ENCODERS = (
    (VGGishConfig, VGGishModel, VGGishForAudioClassification),
    (PannsConfig, PannsModel, PannsForAudioClassification),
    (BeatsConfig, BeatsModel, BeatsForAudioClassification),
)
_CONFIG_CLASSES = {config_class.model_type: config_class for config_class, _, _ in AUDIO_ENCODERS}
_MODEL_CLASSES = {
    AutoModel.__name__: {config.model_type: model for config, model, _ in AUDIO_ENCODERS},
    AutoModelForAudioClassification.__name__: {
        config.model_type: classifier for config, _, classifier in AUDIO_ENCODERS
    },
}


def sub_config_from_dict(config: dict | PreTrainedConfig | None) -> PreTrainedConfig | None:
    """A nested config from its saved dict: the package's class for its `model_type`, else
    Transformers' (`AutoConfig.for_model`). Configs and `None` pass through."""
    if config is None or isinstance(config, PreTrainedConfig):
        return config
    values = dict(config)
    model_type = values.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"a nested config needs its `model_type`; got the keys {sorted(values)}")
    config_class = _CONFIG_CLASSES.get(model_type)
    if config_class is None:
        return AutoConfig.for_model(model_type, **values)
    return config_class(**values)


def sub_model_from_config(config: PreTrainedConfig, auto_class: type = AutoModel) -> PreTrainedModel:
    """The model `auto_class` (`AutoModel` or `AutoModelForAudioClassification`) builds from `config`:
    the package's class for its `model_type`, else Transformers' own."""
    model_class = _MODEL_CLASSES[auto_class.__name__].get(config.model_type)
    return model_class(config) if model_class is not None else auto_class.from_config(config)


__all__ = [
    "AUDIO_ENCODERS",
    "AutoModelForAudioVisualSegmentation",
    "sub_config_from_dict",
    "sub_model_from_config",
]
