"""Registration with transformers' Auto classes (run once on `import genvis_hf`), and
`AutoModelForVideoInstanceSegmentation`, which transformers does not define."""

from __future__ import annotations

from collections import OrderedDict

from transformers import AutoConfig, AutoModel, AutoVideoProcessor
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from .configuration.configuration_genvis import GenVISConfig
from .modeling.modeling_genvis import GenVISForVideoInstanceSegmentation, GenVISModel
from .processing.video_processing_genvis import GenVISVideoProcessor

MODEL_FOR_VIDEO_INSTANCE_SEGMENTATION_MAPPING = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())


class AutoModelForVideoInstanceSegmentation(_BaseAutoModelClass):
    """`from_pretrained` / `from_config` for video instance segmentation models (GenVIS)."""

    _model_mapping = MODEL_FOR_VIDEO_INSTANCE_SEGMENTATION_MAPPING


def register_auto_classes() -> None:
    AutoConfig.register(GenVISConfig.model_type, GenVISConfig, exist_ok=True)
    AutoModel.register(GenVISConfig, GenVISModel, exist_ok=True)
    AutoModelForVideoInstanceSegmentation.register(GenVISConfig, GenVISForVideoInstanceSegmentation, exist_ok=True)
    AutoVideoProcessor.register(GenVISConfig, GenVISVideoProcessor, exist_ok=True)
