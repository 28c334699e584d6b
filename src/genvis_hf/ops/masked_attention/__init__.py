"""Masked multi-head attention for CPU inference as a registered operator (C++, `csrc/`):

`torch.ops.genvis.masked_attention(query, key, value, allowed, num_heads)`: per head,
`softmax(Q_h K_h^T / sqrt(d) over allowed keys) V_h` for Mask2Former's masked cross-attention (100 queries attend
to the up to ~3000 pixels of one level through a boolean mask shared by the heads): one task per (frame, head) with
two single-threaded GEMMs on strided views and a vectorised masked softmax, instead of SDPA's ~1500 tiny flash
blocks. A query with no allowed key gets zeros, as SDPA's CPU kernel gives. `reference` is SDPA with the same
mask; tests/test_ops_masked_attention.py compares the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..build import load_library

__all__ = ["masked_attention", "reference"]


def masked_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor,
                     num_heads: int) -> torch.Tensor:  # fmt: skip
    """query `[N, Lq, C]`, key / value `[N, S, C]` (float32, CPU, last dim contiguous), allowed bool `[N, Lq, S]`
    contiguous (True = may attend) -> `[N, Lq, C]`."""
    load_library("cpu")
    return torch.ops.genvis.masked_attention(query, key, value, allowed, num_heads)


def reference(query, key, value, allowed, num_heads: int) -> torch.Tensor:
    """`masked_attention` in PyTorch: SDPA per head with the boolean mask broadcast over heads."""
    batch, queries, channels = query.shape

    def heads(x):  # [N, L, C] -> [N, h, L, d]
        return x.unflatten(-1, (num_heads, channels // num_heads)).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(query), heads(key), heads(value), attn_mask=allowed[:, None])
    return out.transpose(1, 2).reshape(batch, queries, channels)


def _fake(query, key, value, allowed, num_heads):
    return query.new_empty(query.shape)


def register_python_parts() -> None:
    torch.library.register_fake("genvis::masked_attention", _fake)
