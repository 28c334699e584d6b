"""The one door to multi-scale deformable attention: every caller goes through
`multi_scale_deformable_attention(...)`, which runs the configured backend.

Backends: `"torch"` (pure PyTorch, always available). `"auto"` picks the fastest available one.
Further backends register themselves in `_BACKENDS` with a probe that says whether (and why not) they
can run on a given device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .torch_backend import multi_scale_deformable_attention_torch

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "kernels", "jit", "torch")


class DeformableAttentionBackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here; the message says why in one line."""


@dataclass(frozen=True)
class Backend:
    name: str
    # (value, spatial_shapes_tensor, spatial_shapes_list, level_start_index, locations, weights) -> output
    run: Callable[..., torch.Tensor]
    # device -> None when usable, else a one-line reason
    unavailable_reason: Callable[[torch.device], str | None]


def _run_torch(value, spatial_shapes, spatial_shapes_list, level_start_index, sampling_locations, attention_weights):
    return multi_scale_deformable_attention_torch(value, spatial_shapes_list, sampling_locations, attention_weights)


_BACKENDS: dict[str, Backend] = {
    "torch": Backend("torch", _run_torch, lambda device: None),
}
# Order in which "auto" tries backends.
_AUTO_ORDER = ("kernels", "jit", "torch")
_announced: set[tuple[str, str]] = set()


def register_backend(backend: Backend) -> None:
    """Add (or replace) a backend; used by the optional fast implementations."""
    _BACKENDS[backend.name] = backend


def unavailable_reason(name: str, device: torch.device) -> str | None:
    """None if backend `name` can run on `device`, else a one-line reason."""
    if name not in BACKEND_NAMES or name == "auto":
        return f"unknown deformable attention backend {name!r}; choose one of {BACKEND_NAMES}"
    backend = _BACKENDS.get(name)
    if backend is None:
        return f"the {name!r} backend is not implemented in this version of genvis_hf"
    return backend.unavailable_reason(device)


def resolve_backend(name: str, device: torch.device) -> str:
    """The backend that runs for `name` on `device`; raises `DeformableAttentionBackendUnavailable`
    (one line, saying why) when an explicitly named backend cannot run. `"auto"` never raises."""
    if name == "auto":
        for candidate in _AUTO_ORDER:
            if unavailable_reason(candidate, device) is None:
                key = (candidate, device.type)
                if key not in _announced:
                    _announced.add(key)
                    logger.info("Multi-scale deformable attention backend on %s: %s", device.type, candidate)
                return candidate
        return "torch"
    reason = unavailable_reason(name, device)
    if reason is not None:
        raise DeformableAttentionBackendUnavailable(f"deformable attention backend {name!r} unavailable: {reason}")
    return name


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Names of the backends that can run on `device`."""
    device = torch.device(device)
    return [name for name in _AUTO_ORDER if unavailable_reason(name, device) is None]


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    spatial_shapes_list: list[tuple[int, int]],
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """Multi-scale deformable attention core (after the value/offset/weight projections).

    Args:
        value: `[N, S, heads, d]`, levels flattened and concatenated.
        spatial_shapes: int64 `[levels, 2]` (H_l, W_l); `spatial_shapes_list` the same as Python ints.
        level_start_index: int64 `[levels]`, offset of each level in S.
        sampling_locations: `[N, Lq, heads, levels, points, 2]`, normalised (x, y).
        attention_weights: `[N, Lq, heads, levels, points]`.
        backend: `"auto"`, `"kernels"`, `"jit"` or `"torch"`.

    Returns:
        `[N, Lq, heads * d]`.
    """
    name = resolve_backend(backend, value.device)
    return _BACKENDS[name].run(
        value, spatial_shapes, spatial_shapes_list, level_start_index, sampling_locations, attention_weights
    )
