"""The `kernels` and `jit` backends, both through the `kernels` library's `kernelize` mechanism.

`MultiScaleDeformableAttentionCore` is a stateless layer with the forward signature of transformers' Deformable
DETR core (`value, value_spatial_shapes, value_spatial_shapes_list, level_start_index, sampling_locations,
attention_weights, im2col_step`), registered under the kernel layer name `"MultiScaleDeformableAttention"`.
Its own forward is the pure-PyTorch reference. `kernelize` swaps that forward for a kernel layer taken from a
repository:

- `kernels`: `LayerRepository("kernels-community/deformable-detr", version=1)`, the Hub kernel transformers
  maps to this layer name (CUDA builds only; needs the Hub or the Hugging Face cache).
- `jit`: `LocalLayerRepository(local_kernel/)`, a kernel repository shipped inside this package whose layer
  calls our own compiled kernels (`jit_backend`), for CPU and CUDA.

Each backend kernelizes one core per device, on first use (never at import), checks it against the
reference on a tiny input, and caches the result, positive or negative (with a one-line reason).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch
from torch import nn

from .torch_backend import multi_scale_deformable_attention_torch

logger = logging.getLogger(__name__)

KERNEL_LAYER_NAME = "MultiScaleDeformableAttention"
HUB_REPO_ID = "kernels-community/deformable-detr"
HUB_REPO_VERSION = 1
LOCAL_KERNEL_PATH = Path(__file__).resolve().parent / "local_kernel"
_SMOKE_TOLERANCE = 1e-4


class MultiScaleDeformableAttentionCore(nn.Module):
    """The deformable attention core as a stateless layer that `kernels.kernelize` can swap out.

    Forward args (shapes as in `multi_scale_deformable_attention`): value `[N, S, heads, d]`,
    value_spatial_shapes int64 `[L, 2]`, value_spatial_shapes_list `[(H, W)] * L`, level_start_index int64 `[L]`,
    sampling_locations `[N, Lq, heads, L, P, 2]`, attention_weights `[N, Lq, heads, L, P]`, im2col_step (batch
    chunk of the Hub kernel's CUDA im2col; must divide N). Returns `[N, Lq, heads * d]`.
    """

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


def local_repository():
    """The `kernels` repository of our jit layer, shipped in this package (`local_kernel/torch-universal`)."""
    from kernels import LocalLayerRepository

    return LocalLayerRepository(LOCAL_KERNEL_PATH, layer_name=KERNEL_LAYER_NAME)


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


class ReferenceMismatch(RuntimeError):
    """A kernel loaded but its output disagrees with the torch reference (the message says by how much)."""


def _smoke_check(core: nn.Module, device: torch.device) -> None:
    """Run `core` once on a tiny input and compare with the reference; raises on a mismatch."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (3, 4)]
    num_values = sum(h * w for h, w in shapes)
    value = torch.randn(2, num_values, 2, 4, generator=generator).to(device)
    locations = (torch.rand(2, 6, 2, 2, 3, 2, generator=generator) * 1.4 - 0.2).to(device)
    weights = torch.rand(2, 6, 2, 2, 3, generator=generator).to(device)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=device)
    level_start_index = torch.tensor([0, shapes[0][0] * shapes[0][1]], dtype=torch.long, device=device)
    with torch.no_grad():
        output = core(value, spatial_shapes, shapes, level_start_index, locations, weights, im2col_step_for(2))
        expected = multi_scale_deformable_attention_torch(value, shapes, locations, weights)
    error = (output.float() - expected.float()).abs().max().item()
    if not error <= _SMOKE_TOLERANCE:
        raise ReferenceMismatch(f"the loaded kernel's output differs from the torch reference by {error:.3g}")


class KernelizedBackend:
    """One backend served by a kernelized core per device, built lazily and cached with its failure reason.

    Args:
        name: backend name (for messages). repository: zero-argument callable giving the `kernels` repository.
        device_problem: device -> None if the backend may run there, else a one-line reason (checked before
            anything is loaded). describe_failure: exception -> one-line reason.
    """

    def __init__(self, name, repository, device_problem, describe_failure):
        self.name = name
        self._repository = repository
        self._device_problem = device_problem
        self._describe_failure = describe_failure
        self._cores: dict[tuple[str, int | None], nn.Module] = {}
        self._failures: dict[tuple[str, int | None], str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(device: torch.device) -> tuple[str, int | None]:
        if device.type == "cuda" and device.index is None and torch.cuda.is_available():
            return ("cuda", torch.cuda.current_device())
        return (device.type, device.index)

    def unavailable_reason(self, device: torch.device) -> str | None:
        """None when the backend runs on `device` (loading it on first call), else a one-line reason."""
        key = self._key(device)
        if key in self._cores:
            return None
        if key in self._failures:
            return self._failures[key]
        problem = self._device_problem(device)
        if problem is not None:
            return problem
        with self._lock:
            if key in self._cores:
                return None
            if key in self._failures:
                return self._failures[key]
            try:
                core = kernelize_core(self._repository(), device)
                _smoke_check(core, device)
            except ReferenceMismatch as error:
                return self._remember_failure(key, device, str(error))
            except Exception as error:  # whatever the loader, the compiler or the kernel raises
                return self._remember_failure(key, device, self._describe_failure(error))
            self._cores[key] = core
            return None

    def _remember_failure(self, key, device: torch.device, reason: str) -> str:
        logger.info("Deformable attention backend %r unavailable on %s: %s", self.name, device, reason)
        self._failures[key] = reason
        return reason

    def run(self, value, spatial_shapes, spatial_shapes_list, level_start_index, sampling_locations,
            attention_weights):  # fmt: skip
        """Run the kernelized core for `value`'s device (which must have been found available)."""
        core = self._cores.get(self._key(value.device))
        if core is None:
            reason = self.unavailable_reason(value.device)
            if reason is not None:
                raise RuntimeError(f"deformable attention backend {self.name!r} unavailable: {reason}")
            core = self._cores[self._key(value.device)]
        return core(value, spatial_shapes, spatial_shapes_list, level_start_index, sampling_locations,
                    attention_weights, im2col_step_for(value.shape[0]))  # fmt: skip

    def reset(self) -> None:
        """Forget loaded cores and remembered failures."""
        with self._lock:
            self._cores.clear()
            self._failures.clear()


def _first_line(error: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`, cut to `limit` characters (a compiler's first line can be long)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0] if lines else 'no message'}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hub_device_problem(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"the Hub kernel {HUB_REPO_ID} has CUDA builds only (device is {device.type})"
    if torch.version.hip is not None:
        return f"the Hub kernel {HUB_REPO_ID} is mapped for CUDA, not ROCm"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    return None


def _describe_hub_failure(error: BaseException) -> str:
    return f"cannot load {HUB_REPO_ID} (offline and not in the Hugging Face cache?): {_first_line(error)}"


def _jit_device_problem(device: torch.device) -> str | None:
    from .jit_backend import toolchain_problem

    if device.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available"
    return toolchain_problem(device.type)


def _describe_jit_failure(error: BaseException) -> str:
    from .jit_backend import JitBuildError

    if isinstance(error, JitBuildError):  # already one line, and says what failed
        return str(error)
    return f"loading our kernel layer through kernels failed: {_first_line(error)}"


hub_kernel_backend = KernelizedBackend("kernels", hub_repository, _hub_device_problem, _describe_hub_failure)
jit_kernel_backend = KernelizedBackend("jit", local_repository, _jit_device_problem, _describe_jit_failure)
