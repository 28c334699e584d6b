"""GenVIS video instance segmentation in the Hugging Face Transformers style.

Importing the package registers `GenVISConfig`, `GenVISModel`, `GenVISForVideoInstanceSegmentation` and
`GenVISVideoProcessor` with transformers' Auto classes, and the `video-instance-segmentation` pipeline.
"""

__version__ = "0.1.0"

from .auto import AutoModelForVideoInstanceSegmentation, register_auto_classes
from .configuration import GenVISConfig
from .modeling import ClipMemory, GenVISForVideoInstanceSegmentation, GenVISModel, GenVISModelOutput
from .ops.ms_deform_attn.backends import register_backends
from .optimization import register_fast_path
from .pipelines import VideoInstanceSegmentationPipeline, register_pipeline
from .processing import GenVISVideoProcessor
from .processing.rle import decode_masks

register_auto_classes()
register_backends()  # the jit / kernels deformable attention backends
register_fast_path()  # model.eval() swaps in the CPU inference fast path (genvis_hf.optimization)
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
