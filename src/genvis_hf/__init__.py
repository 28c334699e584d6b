"""GenVIS video instance segmentation in the Hugging Face Transformers style.

Importing the package registers `GenVISConfig`, `GenVISModel`, `GenVISForVideoInstanceSegmentation` and
`GenVISVideoProcessor` with transformers' Auto classes, and the `video-instance-segmentation` pipeline.
"""

__version__ = "0.1.0"

from .auto import AutoModelForVideoInstanceSegmentation, register_auto_classes
from .configuration import GenVISConfig
from .modeling import ClipMemory, GenVISForVideoInstanceSegmentation, GenVISModel, GenVISModelOutput
from .processing import GenVISVideoProcessor
from .processing.rle import decode_masks
from .pipelines import VideoInstanceSegmentationPipeline, register_pipeline

register_auto_classes()
register_pipeline()

__all__ = [
    "AutoModelForVideoInstanceSegmentation",
    "ClipMemory",
    "GenVISConfig",
    "GenVISForVideoInstanceSegmentation",
    "GenVISModel",
    "GenVISModelOutput",
    "GenVISVideoProcessor",
    "VideoInstanceSegmentationPipeline",
    "decode_masks",
]
