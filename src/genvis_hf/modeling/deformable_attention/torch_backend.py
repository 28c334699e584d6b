"""Pure-PyTorch multi-scale deformable attention: bilinear `grid_sample` per level (zeros padding,
align_corners=False), the reference every other backend is checked against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def multi_scale_deformable_attention_torch(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """
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
