"""Original detectron2 GenVIS checkpoints -> `save_pretrained` directories."""

from .convert import ConversionError, ConversionReport, build_config, convert_checkpoint, convert_state_dict
from .original_config import OriginalConfigError, config_kwargs_from_original

__all__ = [
    "ConversionError",
    "ConversionReport",
    "OriginalConfigError",
    "build_config",
    "config_kwargs_from_original",
    "convert_checkpoint",
    "convert_state_dict",
]
