"""Mask2Former's multi-scale deformable-attention pixel decoder, as GenVIS uses it.

Backbone maps res2..res5 -> (1) a deformable transformer encoder over res3..res5 (projected to C channels,
sine position + level embeddings) -> (2) one FPN step to stride 4 (bilinear upsample of the stride-8 map +
1x1 lateral conv on res2 -> 3x3 conv). Returns the three encoder levels (coarse to fine) for the frame
decoder, the stride-4 map, and its 1x1 projection `mask_features` used by the frame decoder's masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .deformable_attention import MultiScaleDeformableAttention
from .layers import ConvNormActivation, linear, sine_position_embedding


@dataclass
class PixelDecoderOutput:
    """
    Attributes:
        multi_scale_features: 3 maps `[N, C, H_l, W_l]`, strides 32, 16, 8 (the frame decoder's inputs).
        stride4_features: `[N, C, H/4, W/4]`, the FPN output before any projection (GenVIS mask input).
        mask_features: `[N, mask_dim, H/4, W/4]`, 1x1 projection of `stride4_features` (frame decoder masks);
            None when not asked for (`GenVISPixelDecoder.forward(output_mask_features=False)`).
    """

    multi_scale_features: list[torch.Tensor]
    stride4_features: torch.Tensor
    mask_features: torch.Tensor | None


class DeformableEncoderLayer(GradientCheckpointingLayer):
    """Deformable self-attention over all levels + FFN, each with residual and post-LayerNorm."""

    def __init__(self, embed_dim: int, num_levels: int, num_heads: int, num_points: int, ffn_dim: int,
                 dropout: float, backend: str):  # fmt: skip
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(embed_dim, num_levels, num_heads, num_points, backend)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states, position_embeddings, reference_points, spatial_shapes, spatial_shapes_list,
                level_start_index):  # fmt: skip
        """hidden_states, position_embeddings `[N, S, C]`; reference_points `[N, S, L, 2]` -> `[N, S, C]`."""
        queries = hidden_states + position_embeddings
        if self.training and self.dropout.p > 0:
            attended = self.self_attn(queries, reference_points, hidden_states, spatial_shapes, spatial_shapes_list,
                                      level_start_index)  # fmt: skip
            hidden_states = self.self_attn_layer_norm(hidden_states + self.dropout(attended))
            ffn = self.dropout(F.relu(linear(hidden_states, self.fc1.weight, self.fc1.bias), inplace=True))
            return self.final_layer_norm(hidden_states + self.dropout(linear(ffn, self.fc2.weight, self.fc2.bias)))
        # Without dropout the residual adds and the ReLU can be post-ops of the products (see `layers.linear`).
        hidden_states = self.self_attn_layer_norm(
            self.self_attn(queries, reference_points, hidden_states, spatial_shapes, spatial_shapes_list,
                           level_start_index, residual=hidden_states)
        )  # fmt: skip
        ffn = linear(hidden_states, self.fc1.weight, self.fc1.bias, relu=True)
        return self.final_layer_norm(linear(ffn, self.fc2.weight, self.fc2.bias, residual=hidden_states))


def encoder_reference_points(spatial_shapes_list: list[tuple[int, int]], batch_size: int,
                             device: torch.device) -> torch.Tensor:  # fmt: skip
    """Pixel centres of every level, normalised to [0, 1]: `[N, S, L, 2]` (x, y), same for every level
    (no padding mask, so every valid ratio is 1)."""
    points = []
    for height, width in spatial_shapes_list:
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=device),
            torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=device),
            indexing="ij",
        )
        points.append(torch.stack((ref_x.reshape(-1) / width, ref_y.reshape(-1) / height), -1))
    reference = torch.cat(points, 0)  # [S, 2]
    return reference[None, :, None, :].expand(batch_size, -1, len(spatial_shapes_list), -1)


class GenVISPixelDecoder(nn.Module):
    """
    Args:
        in_channels: channels of res2..res5.
        hidden_dim: C (`SEM_SEG_HEAD.CONVS_DIM`). mask_dim: channels of `mask_features`.
        num_encoder_layers, num_heads, num_points, ffn_dim: deformable encoder shape.
        num_transformer_levels: how many of the coarsest backbone maps the encoder reads (3: res3..res5).
        common_stride: stride of the finest output (4); one FPN step per power of two below the encoder.
        backend: deformable attention backend name.
    """

    def __init__(self, in_channels: list[int], hidden_dim: int = 256, mask_dim: int = 256,
                 num_encoder_layers: int = 6, num_heads: int = 8, num_points: int = 4, ffn_dim: int = 1024,
                 num_transformer_levels: int = 3, common_stride: int = 4, dropout: float = 0.0,
                 backend: str = "auto"):  # fmt: skip
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_transformer_levels = num_transformer_levels
        transformer_in_channels = in_channels[-num_transformer_levels:]
        # Ordered coarse to fine (res5 first), like the original.
        self.input_projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hidden_dim, kernel_size=1), nn.GroupNorm(32, hidden_dim))
            for c in reversed(transformer_in_channels)
        )
        self.level_embed = nn.Parameter(torch.zeros(num_transformer_levels, hidden_dim))
        self.encoder_layers = nn.ModuleList(
            DeformableEncoderLayer(hidden_dim, num_transformer_levels, num_heads, num_points, ffn_dim, dropout,
                                   backend)  # fmt: skip
            for _ in range(num_encoder_layers)
        )
        finest_transformer_stride = 2 ** (len(in_channels) - num_transformer_levels + 2)
        self.num_fpn_levels = int(math.log2(finest_transformer_stride // common_stride))
        # Ordered coarse to fine: lateral/output convs for the maps finer than the encoder's, top-down.
        fpn_in_channels = list(reversed(in_channels[: self.num_fpn_levels]))
        self.lateral_convs = nn.ModuleList(ConvNormActivation(c, hidden_dim, 1, activation=False) for c in fpn_in_channels)
        self.output_convs = nn.ModuleList(
            ConvNormActivation(hidden_dim, hidden_dim, 3, activation=True) for _ in fpn_in_channels
        )
        self.mask_projection = nn.Conv2d(hidden_dim, mask_dim, kernel_size=1)

    def set_deformable_attention_backend(self, backend: str) -> None:
        for layer in self.encoder_layers:
            layer.self_attn.backend = backend

    def forward(self, features: list[torch.Tensor], output_mask_features: bool = True) -> PixelDecoderOutput:
        """features: backbone maps res2..res5 (fine to coarse), `[N, C_i, H_i, W_i]`. Without
        `output_mask_features` the stride-4 projection is left to the caller (see `level_mask_features`).

        Convolutions run on channels-last tensors (oneDNN reaches 2-3x the speed of NCHW on CPUs), and the
        token <-> map reshapes are views of that layout; outputs are channels-last `[N, C, H, W]` tensors.
        """
        channels_last = torch.channels_last
        transformer_inputs = features[-self.num_transformer_levels :][::-1]  # coarse to fine
        batch = transformer_inputs[0].shape[0]
        sources, positions, spatial_shapes_list = [], [], []
        for level, (x, projection) in enumerate(zip(transformer_inputs, self.input_projections)):
            height, width = x.shape[-2:]
            spatial_shapes_list.append((height, width))
            projected = projection(x.contiguous(memory_format=channels_last))  # [N, C, H, W], channels-last
            sources.append(projected.flatten(2).transpose(1, 2))  # [N, H*W, C] (a view)
            position = sine_position_embedding(batch, height, width, self.hidden_dim // 2, x.device, projected.dtype)
            positions.append(position.flatten(2).transpose(1, 2) + self.level_embed[level].view(1, 1, -1))
        hidden_states = torch.cat(sources, 1)  # [N, S, C]
        position_embeddings = torch.cat(positions, 1)  # [N, S, C]
        device = hidden_states.device
        spatial_shapes = torch.as_tensor(spatial_shapes_list, dtype=torch.long, device=device)  # [L, 2]
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        reference_points = encoder_reference_points(spatial_shapes_list, batch, device)  # [N, S, L, 2]

        for layer in self.encoder_layers:
            hidden_states = layer(hidden_states, position_embeddings, reference_points, spatial_shapes,
                                  spatial_shapes_list, level_start_index)  # fmt: skip

        outputs = [
            level_states.reshape(batch, height, width, -1).permute(0, 3, 1, 2)  # [N, C, H_l, W_l], channels-last
            for level_states, (height, width) in zip(
                hidden_states.split([h * w for h, w in spatial_shapes_list], dim=1), spatial_shapes_list
            )
        ]
        fpn_inputs = features[: self.num_fpn_levels][::-1]  # coarse to fine
        for x, lateral_conv, output_conv in zip(fpn_inputs, self.lateral_convs, self.output_convs):
            lateral = lateral_conv(x.contiguous(memory_format=channels_last))
            upsampled = F.interpolate(outputs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            outputs.append(output_conv(lateral + upsampled))
        return PixelDecoderOutput(
            multi_scale_features=outputs[:3],
            stride4_features=outputs[-1],
            mask_features=self.mask_projection(outputs[-1]) if output_mask_features else None,
        )

    def level_mask_features(self, stride4_features: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """`mask_features` resized bilinearly to each of `sizes`, `[N, mask_dim, h, w]` each, computed as the
        projection of the resized stride-4 map: bilinear weights sum to one, so resizing commutes with the 1x1
        projection (bias included), and the projection then runs on a third of the pixels. What the frame decoder
        needs at inference (its attention masks at each level's size)."""
        return [
            self.mask_projection(F.interpolate(stride4_features, size=size, mode="bilinear", align_corners=False))
            for size in sizes
        ]
