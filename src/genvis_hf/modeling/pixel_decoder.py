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
from .layers import ConvNormActivation, sine_position_embedding


@dataclass
class PixelDecoderOutput:
    """
    Attributes:
        multi_scale_features: 3 maps `[N, C, H_l, W_l]`, strides 32, 16, 8 (the frame decoder's inputs).
        stride4_features: `[N, C, H/4, W/4]`, the FPN output before any projection (GenVIS mask input).
        mask_features: `[N, mask_dim, H/4, W/4]`, 1x1 projection of `stride4_features` (frame decoder masks).
    """

    multi_scale_features: list[torch.Tensor]
    stride4_features: torch.Tensor
    mask_features: torch.Tensor


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
        attended = self.self_attn(hidden_states + position_embeddings, reference_points, hidden_states, spatial_shapes,
                                  spatial_shapes_list, level_start_index)  # fmt: skip
        hidden_states = self.self_attn_layer_norm(hidden_states + self.dropout(attended))
        ffn = self.fc2(self.dropout(F.relu(self.fc1(hidden_states))))
        return self.final_layer_norm(hidden_states + self.dropout(ffn))


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
            DeformableEncoderLayer(hidden_dim, num_transformer_levels, num_heads, num_points, ffn_dim, dropout, backend)
            for _ in range(num_encoder_layers)
        )
        finest_transformer_stride = 2 ** (len(in_channels) - num_transformer_levels + 2)
        self.num_fpn_levels = int(math.log2(finest_transformer_stride // common_stride))
        # Ordered coarse to fine: lateral/output convs for the maps finer than the encoder's, top-down.
        fpn_in_channels = list(reversed(in_channels[: self.num_fpn_levels]))
        self.lateral_convs = nn.ModuleList(
            ConvNormActivation(c, hidden_dim, 1, activation=False) for c in fpn_in_channels
        )
        self.output_convs = nn.ModuleList(
            ConvNormActivation(hidden_dim, hidden_dim, 3, activation=True) for _ in fpn_in_channels
        )
        self.mask_projection = nn.Conv2d(hidden_dim, mask_dim, kernel_size=1)

    def set_deformable_attention_backend(self, backend: str) -> None:
        for layer in self.encoder_layers:
            layer.self_attn.backend = backend

    def forward(self, features: list[torch.Tensor]) -> PixelDecoderOutput:
        """features: backbone maps res2..res5 (fine to coarse), `[N, C_i, H_i, W_i]`."""
        multi_scale_features, stride4_features = self.forward_features(features)
        return PixelDecoderOutput(multi_scale_features, stride4_features, self.mask_projection(stride4_features))

    def forward_features(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The deformable encoder over the coarsest levels, then the FPN down to stride 4: (the encoder's three
        levels `[N, C, H_l, W_l]`, coarse to fine; the stride-4 map `[N, C, H/4, W/4]`). The maps keep the memory
        layout of `features` (channels-last in, channels-last out)."""
        transformer_inputs = features[-self.num_transformer_levels :][::-1]  # coarse to fine
        batch = transformer_inputs[0].shape[0]
        sources, positions, spatial_shapes_list = [], [], []
        for level, (x, projection) in enumerate(zip(transformer_inputs, self.input_projections)):
            height, width = x.shape[-2:]
            spatial_shapes_list.append((height, width))
            projected = projection(x)  # [N, C, H, W]
            sources.append(projected.flatten(2).transpose(1, 2))  # [N, H*W, C]
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
            level_states.reshape(batch, height, width, -1).permute(0, 3, 1, 2)  # [N, C, H_l, W_l] (channels-last)
            for level_states, (height, width) in zip(
                hidden_states.split([h * w for h, w in spatial_shapes_list], dim=1), spatial_shapes_list
            )
        ]
        fpn_inputs = features[: self.num_fpn_levels][::-1]  # coarse to fine
        for x, lateral_conv, output_conv in zip(fpn_inputs, self.lateral_convs, self.output_convs):
            lateral = lateral_conv(x)
            upsampled = F.interpolate(outputs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            outputs.append(output_conv(lateral + upsampled))
        return outputs[:3], outputs[-1]
