from .configuration_genvis import GenVISConfig
from .presets import MODEL_ZOO, PRESETS

__all__ = ["MODEL_ZOO", "PRESETS", "GenVISConfig"]
