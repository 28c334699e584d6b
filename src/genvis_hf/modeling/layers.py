"""Small building blocks shared by the GenVIS decoders: attention, transformer sub-layers, MLP, norms,
sine position encoding. Every tensor here is batch-first: `[batch, tokens, channels]`."""

from __future__ import annotations

import functools
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.cpu import cpu_vendor
from .inference_ops import inference_op
from .winograd import transform_weight, winograd_applies, winograd_conv3x3


# The 1x1-convolution route pays a set-up cost: it wins from ~64 rows once the product is large enough
# (measured on 2 cores of an AMD EPYC: [100, 256] x [256, 2048] 0.32 vs 0.58 ms; [100, 256] x [256, 256] 0.08 vs 0.07).
_CONV_LINEAR_MIN_ROWS = 64
_CONV_LINEAR_MIN_WORK = 100 * 1024  # rows x max(in_features, out_features)


@functools.cache
def _conv_linear_pays() -> bool:
    """Whether the 1x1-convolution route beats BLAS on this CPU. The MKL GEMM behind `F.linear` reaches only
    160-240 GFLOP/s on AMD EPYCs (oneDNN's convolution ~500), but 320-350 on Intel Xeons, close to their fp32
    peak, where the convolution route is equal for the pixel decoder's products and slower for 100-row ones
    (whole model 3% slower, docs/performance.md). `GENVIS_HF_CONV_LINEAR=0/1` overrides."""
    forced = os.environ.get("GENVIS_HF_CONV_LINEAR")
    if forced is not None:
        return forced not in ("", "0", "false", "False")
    return cpu_vendor() != "GenuineIntel"


def softmax_small_last_dim(x: torch.Tensor) -> torch.Tensor:
    """`x.softmax(-1)` for a short last dimension (e.g. the 12 level x point weights of deformable attention),
    where ATen's kernel vectorises poorly: max-shifted `exp` and a sum, ~5x faster on CPUs, equal within 2e-7."""
    shifted = x - x.amax(dim=-1, keepdim=True)
    exponentials = shifted.exp()
    return exponentials / exponentials.sum(dim=-1, keepdim=True)


@functools.cache
def onednn_fused_conv_available() -> bool:
    """Whether torch has oneDNN's convolution with fused post-ops (`torch.ops.mkldnn._convolution_pointwise`,
    what inductor emits on CPUs), used at inference by the ResNet backbone and `linear`.
    `GENVIS_HF_FUSED_CONV=0` turns those paths off."""
    if os.environ.get("GENVIS_HF_FUSED_CONV", "1") in ("0", "false", "False"):
        return False
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _as_image(x: torch.Tensor) -> torch.Tensor:
    """`[..., C]` contiguous -> `[1, C, rows, 1]` with channels-last strides (a view)."""
    return x.reshape(1, -1, 1, x.shape[-1]).permute(0, 3, 1, 2)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
           residual: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:  # fmt: skip
    """`F.linear(x, weight, bias)`, then `+ residual` (same shape as the output), then ReLU, each if asked for,
    computed as a 1x1 convolution over a channels-last view when that is faster.

    The token-by-channel products of the pixel decoder (thousands of rows) run as oneDNN convolutions: on AMD
    CPUs oneDNN reaches 2-3x the GFLOP/s of the BLAS GEMM behind `F.linear` (docs/performance.md); on Intel CPUs
    MKL's GEMM is as fast, and the convolution pays only at inference where the bias, the residual add and the
    ReLU become its post-ops instead of separate passes over the output (the encoder FFN: 10.7 -> 10.0 ms per
    layer). `[..., C_in]` is viewed, without a copy, as a channels-last `[1, C_in, rows, 1]` image; the output
    comes back as a `[..., C_out]` view. Same values up to float rounding; differentiable (the fused post-ops
    only run without autograd).
    """
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    small = rows < _CONV_LINEAR_MIN_ROWS or rows * max(weight.shape) < _CONV_LINEAR_MIN_WORK
    convolution_route = x.device.type == "cpu" and x.dtype == torch.float32 and not small and x.is_contiguous()
    channels_in, channels_out = x.shape[-1], weight.shape[0]
    kernel = weight.view(channels_out, channels_in, 1, 1)
    if (
        convolution_route
        and (residual is not None or relu or _conv_linear_pays())
        and not torch.is_grad_enabled()
        and onednn_fused_conv_available()
        and (residual is None or (residual.is_contiguous() and residual.shape == (*x.shape[:-1], channels_out)))
    ):
        geometry = ([0, 0], [1, 1], [1, 1], 1)
        activation = "relu" if relu else None
        if residual is None:
            out = torch.ops.mkldnn._convolution_pointwise(_as_image(x), kernel, bias, *geometry, activation or "none",
                                                          [], "")  # fmt: skip
        else:
            out = torch.ops.mkldnn._convolution_pointwise.binary(
                _as_image(x), _as_image(residual), kernel, bias, *geometry, "add", 1.0, activation, [], None
            )
        return out.permute(0, 2, 3, 1).reshape(*x.shape[:-1], channels_out)  # [1, C_out, rows, 1] -> [..., C_out]
    if convolution_route and _conv_linear_pays():
        out = F.conv2d(_as_image(x), kernel, bias).permute(0, 2, 3, 1).reshape(*x.shape[:-1], channels_out)
    else:
        out = F.linear(x, weight, bias)
    if residual is not None:
        out = residual + out
    return F.relu(out, inplace=True) if relu else out


def _version(tensor: torch.Tensor) -> int:
    """The tensor's in-place modification counter (inference tensors, e.g. parameters of a model built under
    `torch.inference_mode()`, have none and cannot be modified outside it: 0)."""
    return 0 if tensor.is_inference() else tensor._version


class DerivedTensorCache:
    """One tensor derived from parameters or buffers for a fast inference path (a batch norm folded into
    convolution weights, projections concatenated into one), rebuilt whenever a source tensor is replaced
    (`.to()`, `load_state_dict(assign=True)`) or modified in place (an optimizer step, `load_state_dict`).
    Not module state: never saved, never loaded."""

    def __init__(self):
        self._key: tuple | None = None
        self._value = None

    def get(self, sources: tuple[torch.Tensor, ...], build, *extra_key):
        key = (*extra_key, *((t.data_ptr(), _version(t)) for t in sources))
        if key != self._key:
            self._value = build()
            self._key = key
        return self._value


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
    """`Conv2d` (no bias) -> `GroupNorm(32)` -> optional ReLU: detectron2's `Conv2d(norm="GN")`. A 3x3 conv runs
    by Winograd at CPU inference (`winograd.py`; its transformed filters cached until the weight changes)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, activation: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(32, out_channels)
        self.activation = nn.ReLU(inplace=True) if activation else nn.Identity()
        self._winograd_weight = DerivedTensorCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not winograd_applies(x, self.conv):
            return super().forward(x)
        weight = self._winograd_weight.get((self.conv.weight,), lambda: transform_weight(self.conv.weight))
        return self.activation(self.norm(winograd_conv3x3(x, weight, self.conv.bias)))


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
        return self._split_heads(linear(x, *self.projection(index)))

    def _masked_attention_kernel(self, query: torch.Tensor, attention_mask: torch.Tensor | None):
        """The compiled masked-attention kernel where it applies: CPU float32 inference with a contiguous boolean
        mask `[B, 1, Nq, Nk]` shared by the heads (Mask2Former's masked cross-attention; 1.3-1.5x SDPA's speed
        at 700-3000 keys; a query with no allowed key gets zeros, as with SDPA). None otherwise."""
        if (
            attention_mask is None
            or attention_mask.dtype != torch.bool
            or attention_mask.dim() != 4
            or attention_mask.shape[:3] != (query.shape[0], 1, query.shape[1])
            or not attention_mask.is_contiguous()
            or torch.is_grad_enabled()
            or (self.training and self.dropout > 0)
            or query.device.type != "cpu"
            or query.dtype != torch.float32
        ):
            return None
        return inference_op("masked_attention")

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        projected_key: torch.Tensor | None = None,
        projected_value: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            query: `[B, Nq, C]`; key, value: `[B, Nk, C]` (ignored when their projections are given).
            attention_mask: optional `[B, h, Nq, Nk]` (or broadcastable): bool, True where attention is allowed,
                or float, added to the attention logits.
            projected_key, projected_value: optional `[B, Nk, C]`, the key/value projections already computed
                (e.g. several layers' projections of one memory in one product).

        Returns:
            `[B, Nq, C]`.
        """
        kernel = self._masked_attention_kernel(query, attention_mask)
        if kernel is not None:  # CPU inference with a boolean mask: see `inference_ops.py`
            key = projected_key if projected_key is not None else linear(key, *self.projection(1))
            value = projected_value if projected_value is not None else linear(value, *self.projection(2))
            out = kernel(linear(query, *self.projection(0)), key, value, attention_mask[:, 0], self.num_heads)
            return self.out_proj(out)
        q = self._project(query, 0)
        k = self._split_heads(projected_key) if projected_key is not None else self._project(key, 1)
        v = self._split_heads(projected_value) if projected_value is not None else self._project(value, 2)
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
        projected_key: torch.Tensor | None = None,
        projected_value: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden_states `[B, Nq, C]`, memory `[B, Nk, C]` -> `[B, Nq, C]`; see `GenVISAttention` for the optional
        precomputed key/value projections (then `memory` and `memory_position` are not used)."""
        query = self.norm(hidden_states) if self.pre_norm else hidden_states
        if projected_key is not None:
            attended = self.attention(_with_position(query, query_position), None, None, attention_mask,
                                      projected_key, projected_value)  # fmt: skip
        else:
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
        x = F.relu(linear(x, self.fc1.weight, self.fc1.bias), inplace=True)
        x = linear(self.dropout(x), self.fc2.weight, self.fc2.bias)
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
