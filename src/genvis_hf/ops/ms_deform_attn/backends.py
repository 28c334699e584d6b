"""The `jit` and `kernels` backends of the model's deformable attention core, registered with
`genvis_hf.modeling.deformable_attention.register_backend` when genvis_hf is imported:

- `jit`: our registered operator `torch.ops.genvis.ms_deform_attn` (C++ for CPUs, CUDA), built on first use
  (`ops/build.py`); differentiable, so it serves training and inference alike.
- `kernels`: the Hub kernel `kernels-community/deformable-detr` (the layer transformers' Deformable DETR maps to
  `"MultiScaleDeformableAttention"`), put in place by `kernels.kernelize` on a stateless core layer whose own
  forward is the torch reference (CUDA builds only; needs the Hub or the Hugging Face cache).

Each backend probes a device on first use (never at import): it loads its implementation, checks it against the
reference on a tiny input, and remembers the result, positive or negative (with a one-line reason).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable

import torch
from torch import nn
from transformers.utils import logging

from ... import settings
from ...modeling.deformable_attention import (
    DeformableAttentionBackend,
    multi_scale_deformable_attention_torch,
    register_backend,
)
from ...utils.messages import one_line
from .. import build
from . import ms_deform_attn  # the wrapper of torch.ops.genvis.ms_deform_attn

logger = logging.get_logger(__name__)

KERNEL_LAYER_NAME = "MultiScaleDeformableAttention"
HUB_REPO_ID = "kernels-community/deformable-detr"
HUB_REPO_VERSION = 1
_SMOKE_TOLERANCE = 1e-4


class ReferenceMismatch(RuntimeError):
    """An implementation loaded but its output disagrees with the torch reference (the message says by how much)."""


def _smoke_check(run: Callable[..., torch.Tensor], device: torch.device) -> None:
    """Run `run` once on a tiny input and compare with the reference; raises `ReferenceMismatch` on a mismatch."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (3, 4)]
    num_values = sum(h * w for h, w in shapes)
    value = torch.randn(2, num_values, 2, 4, generator=generator).to(device)
    locations = (torch.rand(2, 6, 2, 2, 3, 2, generator=generator) * 1.4 - 0.2).to(device)
    weights = torch.rand(2, 6, 2, 2, 3, generator=generator).to(device)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=device)
    level_start_index = torch.tensor([0, shapes[0][0] * shapes[0][1]], dtype=torch.long, device=device)
    with torch.no_grad():
        output = run(value, spatial_shapes, shapes, level_start_index, locations, weights)
        expected = multi_scale_deformable_attention_torch(value, shapes, locations, weights)
    error = (output.float() - expected.float()).abs().max().item()
    if not error <= _SMOKE_TOLERANCE:
        raise ReferenceMismatch(f"the loaded kernel's output differs from the torch reference by {error:.3g}")


class ProbedBackend:
    """One backend whose implementation is loaded per device on first use, checked, and cached with its failure.

    Args:
        name: backend name. load: device -> the core's `run` callable (may raise). device_problem: device -> None if
        the backend may run there, else a one-line reason (checked on every probe, before anything is loaded).
        describe_failure: exception -> one-line reason.
    """

    def __init__(self, name, load, device_problem, describe_failure):
        self.name = name
        self._load = load
        self._device_problem = device_problem
        self._describe_failure = describe_failure
        self._runs: dict[tuple[str, int | None], Callable] = {}
        self._failures: dict[tuple[str, int | None], str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(device: torch.device) -> tuple[str, int | None]:
        if device.type == "cuda" and device.index is None and torch.cuda.is_available():
            return ("cuda", torch.cuda.current_device())
        return (device.type, device.index)

    def unavailable_reason(self, device: torch.device) -> str | None:
        """None when the backend runs on `device` (loading it on first call), else a one-line reason."""
        problem = self._device_problem(device)
        if problem is not None:
            return problem
        key = self._key(device)
        if key in self._runs:
            return None
        if key in self._failures:
            return self._failures[key]
        with self._lock:
            if key in self._runs:
                return None
            if key in self._failures:
                return self._failures[key]
            try:
                run = self._load(device)
                _smoke_check(run, device)
            except ReferenceMismatch as error:
                return self._remember_failure(key, device, str(error))
            except Exception as error:  # whatever the loader, the compiler or the kernel raises
                return self._remember_failure(key, device, self._describe_failure(error))
            self._runs[key] = run
            return None

    def _remember_failure(self, key, device: torch.device, reason: str) -> str:
        logger.info("Deformable attention backend %r unavailable on %s: %s", self.name, device, reason)
        self._failures[key] = reason
        return reason

    def run(self, value, spatial_shapes, spatial_shapes_list, level_start_index, sampling_locations,
            attention_weights):  # fmt: skip
        """Run the loaded core for `value`'s device (which must have been found available)."""
        run = self._runs.get(self._key(value.device))
        if run is None:
            reason = self.unavailable_reason(value.device)
            if reason is not None:
                raise RuntimeError(f"deformable attention backend {self.name!r} unavailable: {reason}")
            run = self._runs[self._key(value.device)]
        return run(value, spatial_shapes, spatial_shapes_list, level_start_index, sampling_locations, attention_weights)

    def reset(self) -> None:
        """Forget loaded cores and remembered failures (also the operator library's remembered build failure)."""
        with self._lock:
            self._runs.clear()
            self._failures.clear()
        build.forget_failures()

    def as_model_backend(self) -> DeformableAttentionBackend:
        return DeformableAttentionBackend(self.name, self.run, self.unavailable_reason, self.reset)


# ------------------------------------------------------------------ jit: our registered operator
def _jit_device_problem(device: torch.device) -> str | None:
    if not settings.compiled_ops_enabled():
        return build.unavailable_reason(device.type)
    if device.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available"
    return None


def _load_jit(device: torch.device) -> Callable:
    build.load_library(device.type)
    return ms_deform_attn


def _describe_jit_failure(error: BaseException) -> str:
    return str(error) if isinstance(error, build.OpsBuildError) else f"loading our operator failed: {one_line(error)}"


# ------------------------------------------------------------------ kernels: the Hub kernel through kernelize
class MultiScaleDeformableAttentionCore(nn.Module):
    """The deformable attention core as a stateless layer that `kernels.kernelize` can swap out, with the forward
    signature of transformers' Deformable DETR core (`value, value_spatial_shapes, value_spatial_shapes_list,
    level_start_index, sampling_locations, attention_weights, im2col_step`; im2col_step is the batch chunk of the
    Hub kernel's CUDA im2col and must divide N). Its own forward is the torch reference."""

    def forward(self, value, value_spatial_shapes, value_spatial_shapes_list, level_start_index, sampling_locations,
                attention_weights, im2col_step=64):  # fmt: skip
        return multi_scale_deformable_attention_torch(
            value, value_spatial_shapes_list, sampling_locations, attention_weights
        )


def im2col_step_for(batch: int, preferred: int = 64) -> int:
    """Largest divisor of `batch` not above `preferred` (the Hub kernel asserts batch % step == 0)."""
    return max(step for step in range(1, min(batch, preferred) + 1) if batch % step == 0) if batch > 0 else 1


def hub_repository():
    """The `kernels` repository of the Hub kernel (constructing it touches no network)."""
    from kernels import LayerRepository

    return LayerRepository(HUB_REPO_ID, layer_name=KERNEL_LAYER_NAME, version=HUB_REPO_VERSION)


def kernelize_core(repository, device: torch.device) -> nn.Module:
    """A `MultiScaleDeformableAttentionCore` whose forward `kernelize` replaced with `repository`'s layer for
    `device`'s type. Raises when the layer cannot be loaded or kernelize would keep the reference forward."""
    from kernels import KernelizeFallback, Mode, kernelize, replace_kernel_forward_from_hub, use_kernel_mapping

    replace_kernel_forward_from_hub(MultiScaleDeformableAttentionCore, KERNEL_LAYER_NAME)
    core = MultiScaleDeformableAttentionCore()
    mapping = {KERNEL_LAYER_NAME: {device.type: repository}}
    with use_kernel_mapping(mapping, inherit_mapping=False):
        # TRAINING: the layer must have a backward, since the same core serves training and inference.
        kernelize(core, mode=Mode.TRAINING, device=device.type, use_fallback=KernelizeFallback.NONE)
    if getattr(core.forward, "__func__", None) is MultiScaleDeformableAttentionCore.forward:
        raise RuntimeError(f"kernelize kept the reference forward for {repository}")
    return core


def _load_hub_kernel(device: torch.device) -> Callable:
    core = kernelize_core(hub_repository(), device)

    def run(value, spatial_shapes, spatial_shapes_list, level_start_index, locations, weights):
        return core(value, spatial_shapes, spatial_shapes_list, level_start_index, locations, weights,
                    im2col_step_for(value.shape[0]))  # fmt: skip

    return run


def _hub_device_problem(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"the Hub kernel {HUB_REPO_ID} has CUDA builds only (device is {device.type})"
    if importlib.util.find_spec("kernels") is None:
        return "the kernels package is not installed (pip install 'genvis_hf[kernels]')"
    if torch.version.hip is not None:
        return f"the Hub kernel {HUB_REPO_ID} is mapped for CUDA, not ROCm"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    return None


def _describe_hub_failure(error: BaseException) -> str:
    return f"cannot load {HUB_REPO_ID} (offline and not in the Hugging Face cache?): {one_line(error, 200)}"


jit_backend = ProbedBackend("jit", _load_jit, _jit_device_problem, _describe_jit_failure)
hub_kernel_backend = ProbedBackend("kernels", _load_hub_kernel, _hub_device_problem, _describe_hub_failure)


def register_backends() -> None:
    """Make `"jit"` and `"kernels"` selectable in the model (`config.deformable_attention_backend`)."""
    register_backend(hub_kernel_backend.as_model_backend())
    register_backend(jit_backend.as_model_backend())
