"""Shared helpers of the deformable attention tests: random inputs, devices, and the rule for when a backend
may be skipped (only for a real absence: no CUDA, no toolchain, no Hub kernel; never for a failing build)."""

from __future__ import annotations

import pytest
import torch

from genvis_hf.modeling.deformable_attention import unavailable_reason
from genvis_hf.ops.build import toolchain_problem

DEVICES = ["cpu", "cuda"]
# (backend, device) pairs to check against `torch`: the Hub kernel has CUDA builds only.
FAST_BACKEND_DEVICES = [("jit", "cpu"), ("jit", "cuda"), ("kernels", "cuda")]
FAST_BACKENDS = ["jit", "kernels"]


def make_inputs(batch, shapes, heads, head_dim, queries, points, *, dtype=torch.float32, device="cpu", seed=0,
                low=-0.25, high=1.25):  # fmt: skip
    """Random deformable attention inputs; locations uniform in [low, high]^2, so some fall outside the maps.

    Returns (value, spatial_shapes, spatial_shapes_list, level_start_index, sampling_locations, attention_weights).
    """
    generator = torch.Generator().manual_seed(seed)
    shapes = [(int(h), int(w)) for h, w in shapes]
    num_values = sum(h * w for h, w in shapes)
    levels = len(shapes)
    value = torch.randn(batch, num_values, heads, head_dim, generator=generator, dtype=torch.float64)
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=generator, dtype=torch.float64)
    locations = locations * (high - low) + low
    weights = torch.rand(batch, queries, heads, levels, points, generator=generator, dtype=torch.float64)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=device)
    sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return (value.to(device, dtype), spatial_shapes, shapes, level_start_index, locations.to(device, dtype),
            weights.to(device, dtype))  # fmt: skip


def require_device(device: str | torch.device) -> None:
    """Skip on a machine without that device (CUDA)."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")


def require_backend(name: str, device: str | torch.device) -> None:
    """Skip when `name` cannot run on `device` for a reason outside this project (no CUDA, no compiler, no Hub
    kernel); fail when the jit backend has its toolchain but still cannot run (a broken build is a bug)."""
    require_device(device)
    device = torch.device(device)
    reason = unavailable_reason(name, device)
    if reason is None:
        return
    if name == "jit":
        problem = toolchain_problem(device.type)
        if problem is None:
            pytest.fail(f"the jit backend has its toolchain on {device} but is unavailable: {reason}")
        pytest.skip(f"jit backend cannot be built here: {problem}")
    pytest.skip(f"{name} backend unavailable on {device}: {reason}")
