"""Multi-scale deformable attention as registered operators (C++ for CPUs, CUDA; `csrc/`):

- `torch.ops.genvis.ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)`
  -> `[N, Lq, heads * d]`, differentiable once (in value, locations and weights) through
  `torch.ops.genvis.ms_deform_attn_backward`; CPU and CUDA, any float dtype (half/bfloat16 accumulate in float32).
- `torch.ops.genvis.ms_deform_attn_from_projections(value, spatial_shapes, level_start_index, reference_points,
  offsets, logits, num_points)`: CPU float32 inference straight from the layer's offset and logit projections
  (the softmax over levels x points and `reference + offset / (W_l, H_l)` computed inside the kernel).

Their pure-PyTorch references sit beside them: `reference` (the model's own `grid_sample` implementation,
`genvis_hf.modeling.deformable_attention.multi_scale_deformable_attention_torch`) and `reference_from_projections`;
tests/test_ops_ms_deform_attn.py compares each operator with its reference.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ...modeling.deformable_attention import multi_scale_deformable_attention_torch as reference
from ..build import load_library

__all__ = ["ms_deform_attn", "ms_deform_attn_from_projections", "reference", "reference_from_projections"]


def ms_deform_attn(value: torch.Tensor, spatial_shapes: torch.Tensor, spatial_shapes_list: list[tuple[int, int]],
                   level_start_index: torch.Tensor, sampling_locations: torch.Tensor,
                   attention_weights: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """`torch.ops.genvis.ms_deform_attn` on inputs laid out as it needs them (contiguous; locations and weights in
    `value`'s dtype; shapes and starts int64 on `value`'s device), after checking that the levels add up.

    Args: value `[N, S, heads, d]`; spatial_shapes int64 `[L, 2]` and `spatial_shapes_list` the same as ints;
    level_start_index int64 `[L]`; sampling_locations `[N, Lq, heads, L, P, 2]`; attention_weights
    `[N, Lq, heads, L, P]`. Returns `[N, Lq, heads * d]` in `value`'s dtype.
    """
    total = sum(int(h) * int(w) for h, w in spatial_shapes_list)
    if value.shape[1] != total:
        raise ValueError(f"value has {value.shape[1]} positions but the spatial shapes add up to {total}")
    load_library(value.device.type)
    device = value.device
    return torch.ops.genvis.ms_deform_attn(
        value.contiguous(),
        spatial_shapes.to(device=device, dtype=torch.long).contiguous(),
        level_start_index.to(device=device, dtype=torch.long).contiguous(),
        sampling_locations.to(value.dtype).contiguous(),
        attention_weights.to(value.dtype).contiguous(),
    )


def ms_deform_attn_from_projections(value, spatial_shapes, level_start_index, reference_points, offsets, logits,
                                    num_points: int) -> torch.Tensor:  # fmt: skip
    """`torch.ops.genvis.ms_deform_attn_from_projections` (CPU, float32, no autograd): value `[N, S, heads, d]`
    contiguous, reference_points `[N, Lq, L, 2]`, offsets `[N, Lq, heads * L * P * 2]` (pixels of each level) and
    logits `[N, Lq, heads * L * P]`, each with a contiguous last dim. Returns `[N, Lq, heads * d]`."""
    load_library("cpu")
    return torch.ops.genvis.ms_deform_attn_from_projections(
        value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
        reference_points.contiguous(), offsets, logits, num_points,
    )  # fmt: skip


def reference_from_projections(value, spatial_shapes, spatial_shapes_list, level_start_index, reference_points,
                               offsets, logits, num_points: int) -> torch.Tensor:  # fmt: skip
    """What `ms_deform_attn_from_projections` computes, in PyTorch: softmax of the logits over each head's
    levels x points, locations `reference + offset / (W_l, H_l)`, then `reference`."""
    batch, queries = reference_points.shape[:2]
    heads, levels = value.shape[2], spatial_shapes.shape[0]
    weights = logits.reshape(batch, queries, heads, levels * num_points).softmax(-1)
    weights = weights.view(batch, queries, heads, levels, num_points)
    offsets = offsets.reshape(batch, queries, heads, levels, num_points, 2)
    normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)  # [L, 2] (W, H)
    locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    return reference(value, spatial_shapes_list, locations, weights)


# ------------------------------------------------------------------ Python side of the registration
def _output_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    batch, _, heads, head_dim = value.shape
    return value.new_empty((batch, sampling_locations.shape[1], heads * head_dim))


def _backward_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output):
    return torch.empty_like(value), torch.empty_like(sampling_locations), torch.empty_like(attention_weights)


def _from_projections_fake(value, spatial_shapes, level_start_index, reference_points, offsets, logits, num_points):
    batch, _, heads, head_dim = value.shape
    return value.new_empty((batch, reference_points.shape[1], heads * head_dim))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


@once_differentiable  # a second derivative raises ("trying to differentiate twice") instead of returning zeros
def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    grad_value, grad_locations, grad_weights = torch.ops.genvis.ms_deform_attn_backward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output.contiguous()
    )
    return grad_value, None, None, grad_locations, grad_weights


def register_python_parts() -> None:
    """Fake implementations (torch.compile, torch.export) and the autograd formula, once the library is loaded."""
    torch.library.register_fake("genvis::ms_deform_attn", _output_fake)
    torch.library.register_fake("genvis::ms_deform_attn_backward", _backward_fake)
    torch.library.register_fake("genvis::ms_deform_attn_from_projections", _from_projections_fake)
    torch.library.register_autograd("genvis::ms_deform_attn", _backward, setup_context=_setup_context)
