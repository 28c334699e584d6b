"""Deformable DETR's multi-scale deformable attention: the layer (`MultiScaleDeformableAttention`: value, offset and
weight projections around the sampling core) and the one door to the core, `multi_scale_deformable_attention`.

The core runs on a named backend. This module holds the pure-PyTorch one, `"torch"` (bilinear `grid_sample` per
level), the numerical reference; faster ones register themselves with `register_backend`: `genvis_hf` registers
`"jit"` (its compiled C++/CUDA operator `torch.ops.genvis.ms_deform_attn`) and `"kernels"` (the Hub kernel
`kernels-community/deformable-detr`) when it is imported (`genvis_hf/ops/ms_deform_attn/backends.py`). Code that
carries this module without them (the model exported for `trust_remote_code`) runs `"torch"` for every name.

`"auto"` takes the first available of kernels -> jit -> torch for the device, probing each candidate at most once
per device and process, and never fails where torch works; an explicitly named backend that is registered but
cannot run raises a one-line reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "kernels", "jit", "torch")
_AUTO_ORDER = ("kernels", "jit", "torch")


class DeformableAttentionBackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here; the message says why in one line."""


@dataclass(frozen=True)
class DeformableAttentionBackend:
    """A core implementation: `run(value, spatial_shapes, spatial_shapes_list, level_start_index, locations,
    weights)` and `unavailable_reason(device)` (None when it can run there, else one line); `reset()` forgets
    what its probes remembered."""

    name: str
    run: Callable[..., torch.Tensor]
    unavailable_reason: Callable[[torch.device], str | None]
    reset: Callable[[], None] = lambda: None


def multi_scale_deformable_attention_torch(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The reference core: bilinear `grid_sample` per level (zeros padding, align_corners=False).

    Args:
        value: `[N, S, heads, d]`, the levels' flattened maps concatenated (S = sum of H_l * W_l).
        spatial_shapes: `(H_l, W_l)` of each level, in the order of `value`.
        sampling_locations: `[N, Lq, heads, levels, points, 2]`, (x, y) in [0, 1] (may fall outside).
        attention_weights: `[N, Lq, heads, levels, points]`, softmax-normalised over levels x points.

    Returns:
        `[N, Lq, heads * d]`.
    """
    batch, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    value_per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    sampling_grids = 2 * sampling_locations - 1
    sampled = []
    for level, (height, width) in enumerate(spatial_shapes):
        # [N, H*W, heads, d] -> [N*heads, d, H, W]
        value_l = value_per_level[level].flatten(2).transpose(1, 2).reshape(batch * num_heads, head_dim, height, width)
        # [N, Lq, heads, P, 2] -> [N*heads, Lq, P, 2]
        grid_l = sampling_grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        # [N*heads, d, Lq, P]
        sampled.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    # [N, Lq, heads, L, P] -> [N*heads, 1, Lq, L*P]
    weights = attention_weights.transpose(1, 2).reshape(batch * num_heads, 1, num_queries, num_levels * num_points)
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # [N*heads, d, Lq]
    return output.view(batch, num_heads * head_dim, num_queries).transpose(1, 2).contiguous()


def _run_torch(value, spatial_shapes, spatial_shapes_list, level_start_index, sampling_locations, attention_weights):
    return multi_scale_deformable_attention_torch(value, spatial_shapes_list, sampling_locations, attention_weights)


_BACKENDS: dict[str, DeformableAttentionBackend] = {
    "torch": DeformableAttentionBackend("torch", _run_torch, lambda device: None),
}
_auto_choice: dict[torch.device, str] = {}  # what "auto" resolved to, per device
_auto_lock = threading.Lock()
_warned_missing: set[str] = set()


def register_backend(backend: DeformableAttentionBackend) -> None:
    """Add (or replace) a backend; `"auto"` chooses again on next use."""
    if backend.name not in BACKEND_NAMES or backend.name == "auto":
        raise ValueError(f"backend name must be one of {BACKEND_NAMES[1:]}, got {backend.name!r}")
    _BACKENDS[backend.name] = backend
    _auto_choice.clear()


def clear_backend_cache() -> None:
    """Forget what "auto" chose and every backend's remembered availability (probes run again on next use)."""
    with _auto_lock:
        _auto_choice.clear()
        for backend in _BACKENDS.values():
            backend.reset()


def unavailable_reason(name: str, device: torch.device) -> str | None:
    """None if backend `name` can run on `device`, else a one-line reason."""
    if name not in BACKEND_NAMES or name == "auto":
        return f"unknown deformable attention backend {name!r}; choose one of {BACKEND_NAMES}"
    backend = _BACKENDS.get(name)
    if backend is None:
        return f"the {name!r} backend is not part of this code (it comes with the genvis_hf package)"
    return backend.unavailable_reason(torch.device(device))


def resolve_backend(name: str, device: torch.device) -> str:
    """The backend that runs for `name` on `device`. `"auto"` never raises; a registered backend that cannot run
    raises `DeformableAttentionBackendUnavailable` (one line, saying why); a valid name that this code does not
    carry (the exported model code has `"torch"` only) runs `"torch"`, with one warning."""
    device = torch.device(device)
    if name == "auto":
        choice = _auto_choice.get(device)
        if choice is None:
            with _auto_lock:  # one probe (maybe a compile) at a time
                choice = _auto_choice.get(device) or _resolve_auto(device)
                _auto_choice[device] = choice
        return choice
    if name in BACKEND_NAMES and name not in _BACKENDS:
        if name not in _warned_missing:
            _warned_missing.add(name)
            logger.warning("%s; running the torch backend instead", unavailable_reason(name, device))
        return "torch"
    reason = unavailable_reason(name, device)
    if reason is not None:
        raise DeformableAttentionBackendUnavailable(f"deformable attention backend {name!r} unavailable: {reason}")
    return name


def _resolve_auto(device: torch.device) -> str:
    """First registered backend of kernels -> jit -> torch that can run on `device`; a probe that fails in an
    unexpected way counts as unavailable."""
    for candidate in _AUTO_ORDER:
        if candidate not in _BACKENDS:
            continue
        try:
            reason = unavailable_reason(candidate, device)
        except Exception as error:  # a probe must not break "auto"
            reason = f"probe failed: {type(error).__name__}: {error}"
        if reason is None:
            logger.debug("Multi-scale deformable attention backend on %s: %s", device, candidate)
            return candidate
        logger.debug("Deformable attention backend %r skipped on %s: %s", candidate, device, reason)
    return "torch"


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Names of the backends that can run on `device` (probes each one: may load a kernel or compile)."""
    device = torch.device(device)
    return [name for name in _AUTO_ORDER if name in _BACKENDS and unavailable_reason(name, device) is None]


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


class MultiScaleDeformableAttention(nn.Module):
    """Deformable DETR's multi-scale deformable attention layer.

    Args:
        embed_dim: channels C. num_levels: feature levels L. num_heads: heads h. num_points: points P per
        head and level. backend: deformable attention backend name (see `BACKEND_NAMES`).
    """

    def __init__(self, embed_dim: int, num_levels: int, num_heads: int, num_points: int, backend: str = "auto"):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        self.backend = backend
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        reference_points: torch.Tensor,
        value_states: torch.Tensor,
        spatial_shapes: torch.Tensor,
        spatial_shapes_list: list[tuple[int, int]],
        level_start_index: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            hidden_states: queries (with position embedding added) `[N, Lq, C]`.
            reference_points: `[N, Lq, L, 2]`, normalised (x, y).
            value_states: `[N, S, C]`, the flattened multi-scale maps.
            spatial_shapes / spatial_shapes_list / level_start_index: see `multi_scale_deformable_attention`.

        Returns:
            `[N, Lq, C]`.
        """
        batch, num_queries, _ = hidden_states.shape
        num_values = value_states.shape[1]
        h, L, P = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(value_states).view(batch, num_values, h, self.embed_dim // h)
        offsets = self.sampling_offsets(hidden_states).view(batch, num_queries, h, L, P, 2)
        weights = self.attention_weights(hidden_states).view(batch, num_queries, h, L * P)
        weights = weights.softmax(-1).view(batch, num_queries, h, L, P)
        # offsets are in pixels of each level: normalise by (W_l, H_l)
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)  # [L, 2]
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        # The sampling runs in float32 whatever the model dtype: bf16 locations would be off by a quarter pixel.
        output = multi_scale_deformable_attention(
            value.float(),
            spatial_shapes,
            spatial_shapes_list,
            level_start_index,
            locations.float(),
            weights.float(),
            self.backend,
        ).to(value.dtype)  # [N, Lq, C]
        return self.output_proj(output)
