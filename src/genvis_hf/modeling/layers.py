"""Small building blocks shared by the GenVIS decoders: attention, transformer sub-layers, MLP, norms,
sine position encoding. Every tensor here is batch-first: `[batch, tokens, channels]`."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (detectron2's `FrozenBatchNorm2d`).

    All four tensors are persistent buffers (they are in the original checkpoints), never trained.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent per-channel affine map `x * scale + shift`, each `[C]`."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            # batch_norm's backward would differentiate w.r.t. statistics; an affine map is enough.
            scale, shift = self.scale_and_shift()
            return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class ConvNormActivation(nn.Sequential):
    """`Conv2d` (no bias) -> `GroupNorm(32)` -> optional ReLU: detectron2's `Conv2d(norm="GN")`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, activation: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(32, out_channels)
        self.activation = nn.ReLU(inplace=True) if activation else nn.Identity()


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU in between (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class GenVISAttention(nn.Module):
    """Multi-head attention computed with `scaled_dot_product_attention`.

    Parameters are laid out like `nn.MultiheadAttention` (packed `in_proj_weight` `[3C, C]` and `in_proj_bias`
    for queries, keys and values, then `out_proj`), so original checkpoints map onto it one to one.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def projection(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight `[C, C]` and bias `[C]` of the query (0), key (1) or value (2) projection."""
        rows = slice(index * self.embed_dim, (index + 1) * self.embed_dim)
        return self.in_proj_weight[rows], self.in_proj_bias[rows]

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)  # [B, h, N, d]

    def _project(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Project `[B, N, C]` with the q (0), k (1) or v (2) slice and split heads: `[B, h, N, d]`."""
        return self._split_heads(F.linear(x, *self.projection(index)))

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            query: `[B, Nq, C]`; key, value: `[B, Nk, C]`.
            attention_mask: optional `[B, h, Nq, Nk]` (or broadcastable): bool, True where attention is allowed,
                or float, added to the attention logits.

        Returns:
            `[B, Nq, C]`.
        """
        q, k, v = self._project(query, 0), self._project(key, 1), self._project(value, 2)  # each [B, h, N, d]
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout)  # [B, h, Nq, d]
        out = out.transpose(1, 2).reshape(query.shape[0], query.shape[1], self.embed_dim)
        return self.out_proj(out)


def _with_position(x: torch.Tensor, position: torch.Tensor | None) -> torch.Tensor:
    return x if position is None else x + position


class CrossAttentionLayer(nn.Module):
    """Queries attend to a memory; residual + LayerNorm (post-norm, or pre-norm when `pre_norm`)."""

    def __init__(self, embed_dim: int, num_heads: int, pre_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.attention = GenVISAttention(embed_dim, num_heads, dropout)
        self.norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(
        self,
        hidden_states: torch.Tensor,
        memory: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        memory_position: torch.Tensor | None = None,
        query_position: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden_states `[B, Nq, C]`, memory `[B, Nk, C]` -> `[B, Nq, C]`."""
        query = self.norm(hidden_states) if self.pre_norm else hidden_states
        attended = self.attention(
            _with_position(query, query_position), _with_position(memory, memory_position), memory, attention_mask
        )
        hidden_states = hidden_states + self.dropout(attended)
        return hidden_states if self.pre_norm else self.norm(hidden_states)


class SelfAttentionLayer(nn.Module):
    """Self-attention among queries (positions added to queries and keys, not values) + residual + norm."""

    def __init__(self, embed_dim: int, num_heads: int, pre_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.attention = GenVISAttention(embed_dim, num_heads, dropout)
        self.norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(
        self,
        hidden_states: torch.Tensor,
        query_position: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden_states `[B, N, C]` -> `[B, N, C]`."""
        values = self.norm(hidden_states) if self.pre_norm else hidden_states
        queries = _with_position(values, query_position)
        attended = self.attention(queries, queries, values, attention_mask)
        hidden_states = hidden_states + self.dropout(attended)
        return hidden_states if self.pre_norm else self.norm(hidden_states)


class FeedForwardLayer(nn.Module):
    """Linear -> ReLU -> Linear, residual + LayerNorm."""

    def __init__(self, embed_dim: int, ffn_dim: int, pre_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.norm(hidden_states) if self.pre_norm else hidden_states
        x = self.fc2(self.dropout(F.relu(self.fc1(x))))
        hidden_states = hidden_states + self.dropout(x)
        return hidden_states if self.pre_norm else self.norm(hidden_states)


def sine_position_embedding(
    batch_size: int,
    height: int,
    width: int,
    num_pos_feats: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    temperature: float = 10000.0,
) -> torch.Tensor:
    """Normalised 2-D sine position encoding of DETR / Mask2Former (no padding mask).

    Returns:
        `[batch_size, 2 * num_pos_feats, height, width]` (an expanded view: do not write to it): y features first,
        then x features.
    """
    if torch.compiler.is_compiling():  # traced by torch.compile / torch.export: no cache of traced tensors
        table = _sine_position_table.__wrapped__(height, width, num_pos_feats, str(device), temperature)
    else:
        with torch.inference_mode(False):  # a cached inference tensor must not leak into autograd later
            table = _sine_position_table(height, width, num_pos_feats, str(device), temperature)
    return table.to(dtype).expand(batch_size, -1, -1, -1)


@functools.lru_cache(maxsize=32)
def _sine_position_table(height: int, width: int, num_pos_feats: int, device: str, temperature: float) -> torch.Tensor:
    """`[1, 2F, H, W]`, cached per size (the same few sizes recur for every clip of a video)."""
    scale = 2 * math.pi
    eps = 1e-6
    # Same op sequence as the original (cumsum of ones, normalise by the last value) for bitwise-equal output.
    ones = torch.ones((1, height, width), device=device, dtype=torch.float32)
    y_embed = ones.cumsum(1)
    x_embed = ones.cumsum(2)
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale

    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)

    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)  # [1, 2F, H, W]
