from .modeling_genvis import (
    GenVISForVideoInstanceSegmentation,
    GenVISModel,
    GenVISModelOutput,
    GenVISPreTrainedModel,
    GenVISVideoInstanceSegmentationOutput,
)
from .object_decoder import ClipMemory

__all__ = [
    "ClipMemory",
    "GenVISForVideoInstanceSegmentation",
    "GenVISModel",
    "GenVISModelOutput",
    "GenVISPreTrainedModel",
    "GenVISVideoInstanceSegmentationOutput",
]
