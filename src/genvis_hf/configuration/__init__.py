from .configuration_genvis import GenVISConfig
from .presets import MODEL_ZOO, PRESETS

__all__ = ["GenVISConfig", "MODEL_ZOO", "PRESETS"]
