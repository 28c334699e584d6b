"""Mask2Former's masked-attention transformer decoder, run on every frame: learnable frame queries attend
to one pixel-decoder level per layer (level l % 3, coarse to fine), restricted to the foreground of the
previous prediction head's masks. Its last layer's (normalised) queries are GenVIS's frame queries."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .layers import MLP, CrossAttentionLayer, FeedForwardLayer, SelfAttentionLayer, sine_position_embedding


@dataclass
class FrameDecoderOutput:
    """
    Attributes:
        frame_queries: `[num_outputs, N, fQ, C]` normalised queries of the requested prediction heads (the
            last one only, unless all heads were asked for: index 0 is then the learnable queries before any
            layer, index l the output of layer l).
        class_logits: per requested head `[N, fQ, num_classes + 1]` (None unless predictions were asked for).
        mask_logits: per requested head `[N, fQ, H/4, W/4]` (None unless predictions were asked for).
    """

    frame_queries: torch.Tensor
    class_logits: list[torch.Tensor] | None = None
    mask_logits: list[torch.Tensor] | None = None


def attend_where_not_blocked(blocked: torch.Tensor) -> torch.Tensor:
    """`[N, fQ, HW]` bool, True where a query's previous mask is background -> True where it may attend; a query
    whose mask is empty attends everywhere (as the original; element-wise, no boolean indexing)."""
    return blocked.logical_not().logical_or_(blocked.all(-1, keepdim=True))


class FrameDecoderLayer(GradientCheckpointingLayer):
    """Masked cross-attention -> self-attention -> FFN."""

    def __init__(self, hidden_dim: int, num_heads: int, ffn_dim: int, pre_norm: bool, dropout: float = 0.0):
        super().__init__()
        self.cross_attn = CrossAttentionLayer(hidden_dim, num_heads, pre_norm, dropout)
        self.self_attn = SelfAttentionLayer(hidden_dim, num_heads, pre_norm, dropout)
        self.ffn = FeedForwardLayer(hidden_dim, ffn_dim, pre_norm, dropout)

    def forward(self, queries, memory, memory_position, query_position, attention_mask):
        """queries `[N, fQ, C]`, memory `[N, HW, C]`, attention_mask bool `[N, 1, fQ, HW]` (True = attend)."""
        queries = self.cross_attn(queries, memory, attention_mask, memory_position, query_position)
        queries = self.self_attn(queries, query_position)
        return self.ffn(queries)


class GenVISFrameDecoder(nn.Module):
    """
    Args:
        in_channels: channels of the pixel decoder levels. hidden_dim: C. mask_dim: mask embedding size.
        num_queries: fQ. num_layers: transformer layers (`DEC_LAYERS - 1`). num_heads, ffn_dim, pre_norm: layer
        shape. num_classes: K (the class head has K + 1 outputs). enforce_input_projection: 1x1 conv on the
        inputs even when `in_channels == hidden_dim`. num_levels: pixel-decoder levels read (3).
    """

    def __init__(self, in_channels: int, hidden_dim: int, mask_dim: int, num_queries: int, num_layers: int,
                 num_heads: int, ffn_dim: int, num_classes: int, pre_norm: bool = False,
                 enforce_input_projection: bool = False, num_levels: int = 3):  # fmt: skip
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.layers = nn.ModuleList(
            FrameDecoderLayer(hidden_dim, num_heads, ffn_dim, pre_norm) for _ in range(num_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_features = nn.Embedding(num_queries, hidden_dim)
        self.query_position_embeddings = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_levels, hidden_dim)
        needs_projection = in_channels != hidden_dim or enforce_input_projection
        self.input_projections = nn.ModuleList(
            nn.Conv2d(in_channels, hidden_dim, kernel_size=1) if needs_projection else nn.Identity()
            for _ in range(num_levels)
        )
        self.class_predictor = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embedder = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, multi_scale_features: list[torch.Tensor], mask_features: torch.Tensor,
                output_all_heads: bool = False, output_predictions: bool = False) -> FrameDecoderOutput:  # fmt: skip
        """
        Args:
            multi_scale_features: 3 maps `[N, C_in, H_l, W_l]`, coarse to fine.
            mask_features: `[N, mask_dim, H/4, W/4]`.
            output_all_heads: return every prediction head's queries (training), not just the last.
            output_predictions: also return the requested heads' class and mask logits (training losses).
        """
        memories, memory_positions, sizes = [], [], []
        for level, (x, projection) in enumerate(zip(multi_scale_features, self.input_projections)):
            sizes.append(tuple(x.shape[-2:]))
            position = sine_position_embedding(
                x.shape[0], x.shape[2], x.shape[3], self.hidden_dim // 2, x.device, x.dtype
            )
            memory_positions.append(position.flatten(2).transpose(1, 2))  # [N, HW, C]
            memory = projection(x).permute(0, 2, 3, 1).flatten(1, 2)  # [N, HW, C]
            memories.append(memory + self.level_embed.weight[level])

        batch = multi_scale_features[0].shape[0]
        query_position = self.query_position_embeddings.weight.unsqueeze(0).expand(batch, -1, -1)  # [N, fQ, C]
        queries = self.query_features.weight.unsqueeze(0).expand(batch, -1, -1)
        num_layers = len(self.layers)
        head_outputs: list[tuple] = []
        attention_mask = None
        for head in range(num_layers + 1):  # head 0 reads the learnable queries, head l the output of layer l
            if head > 0:
                level = (head - 1) % self.num_levels
                queries = self.layers[head - 1](queries, memories[level], memory_positions[level], query_position,
                                                attention_mask)  # fmt: skip
            normed = self.decoder_norm(queries)
            keep = output_all_heads or head == num_layers
            class_logits = mask_logits = None
            if output_predictions and keep:
                class_logits = self.class_predictor(normed)
            if head < num_layers or (output_predictions and keep):
                mask_embeddings = self.mask_embedder(normed)  # [N, fQ, D]
                mask_logits = torch.einsum("bqc,bchw->bqhw", mask_embeddings, mask_features)  # [N, fQ, H/4, W/4]
                # where each query may attend at the next layer's level: its mask resized there, foreground
                resized = F.interpolate(mask_logits, size=sizes[head % self.num_levels], mode="bilinear",
                                        align_corners=False)  # fmt: skip
                attention_mask = attend_where_not_blocked(resized.sigmoid().flatten(2) < 0.5).unsqueeze(1).detach()
            if keep:
                head_outputs.append((normed, class_logits, mask_logits if output_predictions else None))

        return FrameDecoderOutput(
            frame_queries=torch.stack([h[0] for h in head_outputs]),
            class_logits=[h[1] for h in head_outputs] if output_predictions else None,
            mask_logits=[h[2] for h in head_outputs] if output_predictions else None,
        )
