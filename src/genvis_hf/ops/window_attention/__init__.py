"""Swin's window attention for CPU inference as a registered operator (C++, `csrc/`):

`torch.ops.genvis.window_attention(qkv, relative_bias, window_mask, num_heads, scale)`: for every window and head,
`softmax(scale * Q K^T + relative_bias[h] + window_mask[w % nW]) V`, straight from the packed qkv projection of the
windowed tokens (`[windows, N, 3C]`), one task per (window, head) with two GEMMs on strided views and a vectorised
softmax, instead of the reference's permutes, gathered bias, broadcast mask and batched products through a
`[windows x heads, N, N]` tensor. `reference` is the reference computation (`SwinWindowAttention`'s arithmetic);
tests/test_ops_window_attention.py compares the two.
"""

from __future__ import annotations

import torch

from ..build import load_library

__all__ = ["reference", "window_attention"]


def window_attention(qkv: torch.Tensor, relative_bias: torch.Tensor, window_mask: torch.Tensor | None,
                     num_heads: int, scale: float) -> torch.Tensor:  # fmt: skip
    """qkv `[Wn, N, 3C]` float32 (CPU, last dim contiguous), relative_bias `[heads, N, N]`, window_mask `[nW, N, N]`
    (window w uses `w % nW`; the windows of each image are consecutive) or None -> `[Wn, N, C]`."""
    load_library("cpu")
    return torch.ops.genvis.window_attention(qkv, relative_bias, window_mask, num_heads, scale)


def reference(qkv, relative_bias, window_mask, num_heads: int, scale: float) -> torch.Tensor:
    """What `SwinWindowAttention.forward` computes between its two projections."""
    windows, tokens, channels = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    q, k, v = qkv.reshape(windows, tokens, 3, num_heads, channels // num_heads).permute(2, 0, 3, 1, 4).unbind(0)
    attn = (q * scale) @ k.transpose(-2, -1) + relative_bias.unsqueeze(0)  # [Wn, h, N, N]
    if window_mask is not None:
        attn = attn.view(-1, window_mask.shape[0], num_heads, tokens, tokens) + window_mask[None, :, None]
        attn = attn.view(windows, num_heads, tokens, tokens)
    return (attn.softmax(-1) @ v).transpose(1, 2).reshape(windows, tokens, channels)


def _fake(qkv, relative_bias, window_mask, num_heads, scale):
    return qkv.new_empty((qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3))


def register_python_parts() -> None:
    torch.library.register_fake("genvis::window_attention", _fake)
