"""Multi-scale deformable attention behind one boundary (`multi_scale_deformable_attention`), with three
backends: `kernels` (Hub kernel, CUDA), `jit` (our C++/CUDA kernels compiled on first use) and `torch`."""

from .dispatch import (
    BACKEND_NAMES,
    DeformableAttentionBackendUnavailable,
    available_backends,
    clear_backend_cache,
    multi_scale_deformable_attention,
    resolve_backend,
    unavailable_reason,
)
from .kernels_backend import LOCAL_KERNEL_PATH, MultiScaleDeformableAttentionCore
from .module import MultiScaleDeformableAttention

__all__ = [
    "BACKEND_NAMES",
    "DeformableAttentionBackendUnavailable",
    "LOCAL_KERNEL_PATH",
    "MultiScaleDeformableAttention",
    "MultiScaleDeformableAttentionCore",
    "available_backends",
    "clear_backend_cache",
    "multi_scale_deformable_attention",
    "resolve_backend",
    "unavailable_reason",
]
