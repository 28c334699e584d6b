"""Fast variants of the shared building blocks (`genvis_hf/modeling/layers.py`) and of `nn.Linear`, for CPU
inference: products on the faster GEMM route with fused post-ops, the masked-attention operator, Winograd 3x3
convolutions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.layers import ConvNormActivation, FeedForwardLayer, GenVISAttention
from ..ops.linear import linear_pointwise
from ..ops.masked_attention import masked_attention
from ..ops.winograd import transform_weight, winograd_conv3x3
from .conditions import (
    compiled_ops_ready,
    cpu_has_avx512,
    cpu_inference,
    fused_conv_ready,
    linear_uses_onednn,
    onednn_takes,
)
from .derived import DerivedTensorCache
from .registry import FastModule, fast_variant_of

# The oneDNN route pays a set-up cost: it wins from ~64 rows once the product is large enough (the thresholds are
# measured, docs/performance.md "Linear routes").
_ONEDNN_MIN_ROWS = 64
_ONEDNN_MIN_WORK = 100 * 1024  # rows x max(in_features, out_features)
# Without AVX-512, oneDNN's 1x1 convolution falls to ~30 GFLOP/s for long reductions (Swin-L's MLP fc2, 3072 and 6144
# input features) where MKL's GEMM keeps ~100 (AMD Zen 3, 2 threads; up to 1536 features oneDNN is as fast or faster).
_ONEDNN_AVX2_MAX_IN_FEATURES = 2048
# Winograd's 36 position GEMMs go through MKL's batched GEMM without AVX-512: slower than oneDNN's direct convolution
# for 64 channels (54 vs 24 ms, 4 frames at 90x120, Zen 3), 1.4-2.3x faster from 128 channels on.
_WINOGRAD_AVX2_MIN_CHANNELS = 128


_ACTIVATIONS = {"none": lambda x: x, "relu": F.relu, "gelu": F.gelu}


def fast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                residual: torch.Tensor | None = None, activation: str = "none") -> torch.Tensor:  # fmt: skip
    """`activation(F.linear(x, weight, bias) + residual?)` (`"none"`, `"relu"`, `"gelu"`) at CPU inference by the
    faster route: a oneDNN 1x1 convolution with the bias, the add and the activation as post-ops
    (`torch.ops.genvis.linear_pointwise`) where the product is large enough and either the CPU's BLAS is the slower
    route (`settings.linear_uses_onednn`) or there are post-ops to fuse; `F.linear` and separate ops otherwise.
    Same values up to float rounding."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    large = rows >= _ONEDNN_MIN_ROWS and rows * max(weight.shape) >= _ONEDNN_MIN_WORK
    if (
        large
        and (residual is not None or activation != "none" or linear_uses_onednn())
        and cpu_inference(x, torch.float32, torch.bfloat16)
        and x.is_contiguous()
        and weight.dtype == x.dtype
        and (residual is None or residual.shape == (*x.shape[:-1], weight.shape[0]))
        and fused_conv_ready()
        and onednn_takes(x)
        and (weight.shape[1] <= _ONEDNN_AVX2_MAX_IN_FEATURES or cpu_has_avx512())
    ):
        return linear_pointwise(x, weight, bias, residual=residual, activation=activation)
    out = F.linear(x, weight, bias)
    if residual is not None:
        out = residual + out
    return _ACTIVATIONS[activation](out)


@fast_variant_of(nn.Linear)
class OneDNNLinear(FastModule, nn.Linear):
    """`nn.Linear` whose product takes `fast_linear`'s route at CPU inference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        return fast_linear(x, self.weight, self.bias)


@fast_variant_of(GenVISAttention)
class FastGenVISAttention(FastModule, GenVISAttention):
    """Attention whose projections take `fast_linear`'s route and whose boolean-masked attention (Mask2Former's
    masked cross-attention) runs as `torch.ops.genvis.masked_attention` at CPU inference (two GEMMs per frame and head
    instead of SDPA's many small flash blocks; in float32, also for a bfloat16 model; a query with no allowed key
    gets zeros, as with SDPA)."""

    def _project(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super()._project(x, index)
        return self._split_heads(fast_linear(x, *self.projection(index)))

    def masked_attention_applies(self, query: torch.Tensor, attention_mask: torch.Tensor | None) -> bool:
        """Whether `attend` runs the operator: a contiguous boolean mask `[B, 1, Nq, Nk]` shared by the heads, CPU
        float32 or bfloat16 inference, no dropout, the operator built."""
        return (
            attention_mask is not None
            and attention_mask.dtype == torch.bool
            and attention_mask.dim() == 4
            and attention_mask.shape[:3] == (query.shape[0], 1, query.shape[1])
            and attention_mask.is_contiguous()
            and not (self.training and self.dropout > 0)
            and cpu_inference(query, torch.float32, torch.bfloat16)
            and compiled_ops_ready()
        )

    def attend(self, query: torch.Tensor, projected_key: torch.Tensor, projected_value: torch.Tensor,
               attention_mask: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        """Attention of `query` `[B, Nq, C]` over keys and values already projected (`[B, Nk, C]`, e.g. several
        layers' projections of one memory computed in one product) -> `[B, Nq, C]`."""
        q = fast_linear(query, *self.projection(0))
        if self.masked_attention_applies(query, attention_mask):  # in float32 (also for a bfloat16 model)
            out = masked_attention(
                q.float(), projected_key.float(), projected_value.float(), attention_mask[:, 0], self.num_heads
            ).to(q.dtype)
        else:
            dropout = self.dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(
                self._split_heads(q), self._split_heads(projected_key), self._split_heads(projected_value),
                attn_mask=attention_mask, dropout_p=dropout,
            )  # fmt: skip
            out = out.transpose(1, 2).reshape(query.shape[0], query.shape[1], self.embed_dim)
        return self.out_proj(out)

    def forward(self, query, key, value, attention_mask=None):
        if not self.masked_attention_applies(query, attention_mask):
            return super().forward(query, key, value, attention_mask)
        key = fast_linear(key, *self.projection(1))
        value = fast_linear(value, *self.projection(2))
        return self.attend(query, key, value, attention_mask)


@fast_variant_of(FeedForwardLayer)
class FusedFeedForwardLayer(FastModule, FeedForwardLayer):
    """The FFN with its ReLU and its residual add as post-ops of the two products at inference."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or (self.training and self.dropout.p > 0):
            return super().forward(hidden_states)
        x = self.norm(hidden_states) if self.pre_norm else hidden_states
        x = fast_linear(x, self.fc1.weight, self.fc1.bias, activation="relu")
        hidden_states = fast_linear(x, self.fc2.weight, self.fc2.bias, residual=hidden_states)
        return hidden_states if self.pre_norm else self.norm(hidden_states)


def winograd_applies(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """Whether `conv(x)` can run as `winograd_conv3x3`: CPU float32 inference, a 3x3 stride-1 padding-1
    convolution without dilation or groups, and the operator built."""
    return (
        cpu_inference(x, torch.float32)
        and x.dim() == 4
        and conv.weight.dtype == torch.float32
        and tuple(conv.kernel_size) == (3, 3)
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.padding) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and (conv.in_channels >= _WINOGRAD_AVX2_MIN_CHANNELS or cpu_has_avx512())
        and compiled_ops_ready()
    )


@fast_variant_of(ConvNormActivation)
class WinogradConvNormActivation(FastModule, ConvNormActivation):
    """A 3x3 conv + GroupNorm (+ ReLU) whose convolution runs by Winograd F(4x4, 3x3) at CPU inference (the pixel
    decoder's stride-4 output conv: 4x fewer multiply-adds); transformed filters cached until the weight changes."""

    _FAST_ATTRIBUTES = ("_winograd_weight",)

    def _setup_fast(self) -> None:
        self._winograd_weight = DerivedTensorCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not winograd_applies(x, self.conv):
            return super().forward(x)
        weight = self._winograd_weight.get((self.conv.weight,), lambda: transform_weight(self.conv.weight))
        return self.activation(self.norm(winograd_conv3x3(x, weight, self.conv.bias)))
