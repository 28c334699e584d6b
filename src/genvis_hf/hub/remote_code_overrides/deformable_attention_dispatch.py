"""Deformable attention dispatch, as exported with a GenVIS model for `trust_remote_code` loading.

This file replaces `genvis_hf/modeling/deformable_attention/dispatch.py` in the exported code. Only the
pure-PyTorch backend is exported: `"auto"` and `"torch"` run it; `"kernels"` and `"jit"` (compiled kernels,
shipped with the `genvis_hf` package only) report themselves unavailable, and a model configured for one of
them runs the torch backend instead, with one warning.
"""

from __future__ import annotations

import logging

import torch

from .torch_backend import multi_scale_deformable_attention_torch

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "kernels", "jit", "torch")
_warned: set[str] = set()


class DeformableAttentionBackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here; the message says why in one line."""


def unavailable_reason(name: str, device: torch.device) -> str | None:
    """None if backend `name` can run on `device`, else a one-line reason."""
    if name not in BACKEND_NAMES or name == "auto":
        return f"unknown deformable attention backend {name!r}; choose one of {BACKEND_NAMES}"
    if name != "torch":
        return f"the {name!r} backend is not part of the exported model code (install genvis_hf to use it)"
    return None


def resolve_backend(name: str, device: torch.device) -> str:
    """Always `"torch"`: for `"auto"` and `"torch"`, and (with one warning) for the compiled backends, which
    the exported code does not carry. Raises `DeformableAttentionBackendUnavailable` for unknown names."""
    if name not in BACKEND_NAMES:
        raise DeformableAttentionBackendUnavailable(unavailable_reason(name, device))
    if name in ("kernels", "jit") and name not in _warned:
        _warned.add(name)
        logger.warning("%s; running the torch backend instead", unavailable_reason(name, device))
    return "torch"


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    return ["torch"]


def clear_backend_cache() -> None:
    """Nothing is cached by the torch backend."""


def inference_kernel_from_projections(backend: str, device: torch.device) -> None:
    """No compiled kernels in the exported code."""
    return None


def cpu_inference_kernel(name: str) -> None:
    """No compiled kernels in the exported code: its convolutions and attention are torch's own."""
    return None


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    spatial_shapes_list: list[tuple[int, int]],
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """Multi-scale deformable attention core (see `genvis_hf.modeling.deformable_attention.dispatch`)."""
    resolve_backend(backend, value.device)
    return multi_scale_deformable_attention_torch(value, spatial_shapes_list, sampling_locations, attention_weights)
