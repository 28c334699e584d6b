"""GenVIS video instance segmentation in the Hugging Face Transformers style.

Importing the package registers `GenVISConfig`, `GenVISModel`, `GenVISForVideoInstanceSegmentation` and
`GenVISVideoProcessor` with transformers' Auto classes.
"""

__version__ = "0.1.0"

from .auto import AutoModelForVideoInstanceSegmentation, register_auto_classes
from .configuration import GenVISConfig
from .modeling import ClipMemory, GenVISForVideoInstanceSegmentation, GenVISModel, GenVISModelOutput
from .processing import GenVISVideoProcessor

register_auto_classes()

__all__ = [
    "AutoModelForVideoInstanceSegmentation",
    "ClipMemory",
    "GenVISConfig",
    "GenVISForVideoInstanceSegmentation",
    "GenVISModel",
    "GenVISModelOutput",
    "GenVISVideoProcessor",
]
