"""Multi-scale deformable attention behind one boundary (`multi_scale_deformable_attention`)."""

from .dispatch import (
    BACKEND_NAMES,
    DeformableAttentionBackendUnavailable,
    available_backends,
    multi_scale_deformable_attention,
    resolve_backend,
)
from .module import MultiScaleDeformableAttention

__all__ = [
    "BACKEND_NAMES",
    "DeformableAttentionBackendUnavailable",
    "MultiScaleDeformableAttention",
    "available_backends",
    "multi_scale_deformable_attention",
    "resolve_backend",
]
