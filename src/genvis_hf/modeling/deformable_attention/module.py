"""`MultiScaleDeformableAttention`: the projections around the deformable attention core."""

from __future__ import annotations

import torch
from torch import nn

from ..layers import DerivedTensorCache, linear, softmax_small_last_dim
from .dispatch import inference_kernel_from_projections, multi_scale_deformable_attention


class MultiScaleDeformableAttention(nn.Module):
    """Deformable DETR's multi-scale deformable attention layer.

    Args:
        embed_dim: channels C. num_levels: feature levels L. num_heads: heads h. num_points: points P per
        head and level. backend: deformable attention backend name (see `dispatch.BACKEND_NAMES`).
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
        self._offsets_and_logits = DerivedTensorCache()  # both projections as one [h*L*P*3, C] product

    def _fused_kernel(self, hidden_states: torch.Tensor, value_states: torch.Tensor):
        """Inference on a CPU with the `jit` kernels in float32: offsets and attention logits come from one
        product, and the kernel itself applies the softmax and turns offsets into locations
        (`forward_from_projections`), which saves two passes over `[N, Lq, h, L, P]` tensors. None otherwise."""
        if torch.is_grad_enabled() or not (
            hidden_states.dtype == value_states.dtype == self.value_proj.weight.dtype == torch.float32
        ):
            return None
        return inference_kernel_from_projections(self.backend, value_states.device)

    def _forward_fused(self, kernel, hidden_states, reference_points, value, spatial_shapes, level_start_index):
        num_offsets = self.sampling_offsets.out_features
        weight, bias = self._offsets_and_logits.get(
            (self.sampling_offsets.weight, self.sampling_offsets.bias, self.attention_weights.weight,
             self.attention_weights.bias),
            lambda: (torch.cat([self.sampling_offsets.weight, self.attention_weights.weight]),
                     torch.cat([self.sampling_offsets.bias, self.attention_weights.bias])),
        )  # fmt: skip
        projections = linear(hidden_states, weight, bias)  # [N, Lq, h*L*P*2 + h*L*P]
        return kernel(
            value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
            reference_points.contiguous(), projections[..., :num_offsets], projections[..., num_offsets:],
            self.num_points,
        )  # fmt: skip  # [N, Lq, C]

    def forward(
        self,
        hidden_states: torch.Tensor,
        reference_points: torch.Tensor,
        value_states: torch.Tensor,
        spatial_shapes: torch.Tensor,
        spatial_shapes_list: list[tuple[int, int]],
        level_start_index: torch.Tensor,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            hidden_states: queries (with position embedding added) `[N, Lq, C]`.
            reference_points: `[N, Lq, L, 2]`, normalised (x, y).
            value_states: `[N, S, C]`, the flattened multi-scale maps.
            spatial_shapes / spatial_shapes_list / level_start_index: see `multi_scale_deformable_attention`.
            residual: `[N, Lq, C]` added to the output (the caller's residual connection, fused into the output
                projection at inference; see `layers.linear`).

        Returns:
            `[N, Lq, C]`.
        """
        batch, num_queries, _ = hidden_states.shape
        num_values = value_states.shape[1]
        h, L, P = self.num_heads, self.num_levels, self.num_points
        value = linear(value_states, self.value_proj.weight, self.value_proj.bias)
        value = value.view(batch, num_values, h, self.embed_dim // h)
        kernel = self._fused_kernel(hidden_states, value_states)
        if kernel is not None:
            output = self._forward_fused(kernel, hidden_states, reference_points, value, spatial_shapes,
                                         level_start_index)  # fmt: skip
            return linear(output, self.output_proj.weight, self.output_proj.bias, residual=residual)
        offsets = linear(hidden_states, self.sampling_offsets.weight, self.sampling_offsets.bias)
        offsets = offsets.view(batch, num_queries, h, L, P, 2)
        weights = linear(hidden_states, self.attention_weights.weight, self.attention_weights.bias)
        weights = weights.view(batch, num_queries, h, L * P)
        weights = softmax_small_last_dim(weights).view(batch, num_queries, h, L, P)
        # offsets are in pixels of each level: normalise by (W_l, H_l); addcdiv = the add and the division in
        # one pass, with the same two roundings
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)  # [L, 2]
        locations = torch.addcdiv(
            reference_points[:, :, None, :, None, :], offsets, normalizer[None, None, None, :, None, :]
        )  # [N, Lq, h, L, P, 2]
        # The sampling runs in float32 whatever the model dtype: bf16 locations would be off by a quarter pixel.
        output = multi_scale_deformable_attention(
            value.float(), spatial_shapes, spatial_shapes_list, level_start_index, locations.float(), weights.float(),
            self.backend,
        ).to(value.dtype)
        return linear(output, self.output_proj.weight, self.output_proj.bias, residual=residual)
