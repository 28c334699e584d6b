"""Multi-scale deformable attention, as exported with a GenVIS model for `trust_remote_code` loading.

This file replaces `genvis_hf/modeling/deformable_attention/__init__.py` in the exported code: the export
carries the pure-PyTorch backend only (no compiled kernels, nothing to build), which gives the same results as
`genvis_hf` with `deformable_attention_backend="torch"`. Install `genvis_hf` for the faster backends.
"""

from .dispatch import (
    BACKEND_NAMES,
    DeformableAttentionBackendUnavailable,
    available_backends,
    clear_backend_cache,
    multi_scale_deformable_attention,
    resolve_backend,
    unavailable_reason,
)
from .module import MultiScaleDeformableAttention

__all__ = [
    "BACKEND_NAMES",
    "DeformableAttentionBackendUnavailable",
    "MultiScaleDeformableAttention",
    "available_backends",
    "clear_backend_cache",
    "multi_scale_deformable_attention",
    "resolve_backend",
    "unavailable_reason",
]
