"""The one door to multi-scale deformable attention: every caller goes through
`multi_scale_deformable_attention(...)`, which runs the configured backend.

Backends (registered in `_BACKENDS`, each with a probe that says whether, and why not, it runs on a device):

- `"kernels"`: the Hub kernel `kernels-community/deformable-detr` through the `kernels` library (CUDA only;
  needs the Hub or the Hugging Face cache).
- `"jit"`: our own C++/CUDA kernels (`csrc/`), compiled on first use, also put in place by `kernels.kernelize`
  from a local kernel repository shipped in the package (see `kernels_backend`).
- `"torch"`: pure PyTorch (`grid_sample`), always available; the numerical reference.

`"auto"` takes the first available of `_AUTO_ORDER` for the device, probing each candidate at most once per
device and process (a probe may load a kernel or compile; failures are remembered), and logs its choice once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import jit_backend as jit_build
from .kernels_backend import hub_kernel_backend, jit_kernel_backend
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
    "kernels": Backend("kernels", hub_kernel_backend.run, hub_kernel_backend.unavailable_reason),
    "jit": Backend("jit", jit_kernel_backend.run, jit_kernel_backend.unavailable_reason),
    "torch": Backend("torch", _run_torch, lambda device: None),
}
# Order in which "auto" tries backends.
_AUTO_ORDER = ("kernels", "jit", "torch")
_announced: set[tuple[str, str]] = set()
_auto_choice: dict[torch.device, str] = {}  # what "auto" resolved to, per device
_auto_lock = threading.Lock()


def register_backend(backend: Backend) -> None:
    """Add (or replace) a backend; used by the optional fast implementations."""
    _BACKENDS[backend.name] = backend
    _auto_choice.clear()


def clear_backend_cache() -> None:
    """Forget what "auto" chose and every backend's remembered availability (probes run again on next use)."""
    with _auto_lock:
        _auto_choice.clear()
        hub_kernel_backend.reset()
        jit_kernel_backend.reset()
        jit_build.reset()


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
        choice = _auto_choice.get(device)
        if choice is None:
            with _auto_lock:  # one probe (maybe a compile) at a time
                choice = _auto_choice.get(device) or _resolve_auto(device)
                _auto_choice[device] = choice
        return choice
    reason = unavailable_reason(name, device)
    if reason is not None:
        raise DeformableAttentionBackendUnavailable(f"deformable attention backend {name!r} unavailable: {reason}")
    return name


def _resolve_auto(device: torch.device) -> str:
    """First backend of `_AUTO_ORDER` that can run on `device`; never raises (a probe that fails in an
    unexpected way counts as unavailable), and falls back to "torch"."""
    choice = "torch"
    for candidate in _AUTO_ORDER:
        try:
            reason = unavailable_reason(candidate, device)
        except Exception as error:  # a probe must not break "auto"
            reason = f"probe failed: {type(error).__name__}: {error}"
        if reason is None:
            choice = candidate
            break
        logger.debug("Deformable attention backend %r skipped on %s: %s", candidate, device, reason)
    key = (choice, device.type)
    if key not in _announced:
        _announced.add(key)
        logger.info("Multi-scale deformable attention backend on %s: %s", device.type, choice)
    return choice


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Names of the backends that can run on `device` (probes each one: may load a kernel or compile)."""
    device = torch.device(device)
    return [name for name in _AUTO_ORDER if unavailable_reason(name, device) is None]


def inference_kernel_from_projections(backend: str, device: torch.device) -> Callable[..., torch.Tensor] | None:
    """The jit kernels' `forward_from_projections` (CPU inference that applies the attention softmax and turns
    offsets into sampling locations inside the kernel; see `csrc/ms_deform_attn.h`) when `backend` runs as
    `"jit"` on `device` and that is a CPU; None otherwise."""
    if device.type != "cpu" or resolve_backend(backend, device) != "jit":
        return None
    return jit_build.load_extension("cpu").forward_from_projections


def cpu_inference_kernel(name: str) -> Callable[..., torch.Tensor] | None:
    """Function `name` of the jit CPU extension (`winograd_conv3x3`, `masked_attention`: see
    `modeling/inference_ops.py`), or None where the extension cannot be had (no compiler,
    `GENVIS_HF_DISABLE_JIT`, a failed build)."""
    try:
        return getattr(jit_build.load_extension("cpu"), name)
    except jit_build.JitBuildError:
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
