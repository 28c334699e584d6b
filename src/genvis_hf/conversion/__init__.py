"""Checkpoint key maps: original detectron2 GenVIS checkpoints -> `save_pretrained` directories, and transformers' Mask2Former
-> GenVIS's backbone, pixel decoder and frame decoder (`init_from_mask2former`)."""

from .convert import ConversionError, ConversionReport, build_config, convert_checkpoint, convert_state_dict
from .mask2former import Mask2FormerInitError, Mask2FormerInitReport, init_from_mask2former
from .original_config import OriginalConfigError, config_kwargs_from_original, processor_kwargs_from_original

__all__ = [
    "ConversionError",
    "ConversionReport",
    "Mask2FormerInitError",
    "Mask2FormerInitReport",
    "OriginalConfigError",
    "build_config",
    "config_kwargs_from_original",
    "convert_checkpoint",
    "convert_state_dict",
    "init_from_mask2former",
    "processor_kwargs_from_original",
]
