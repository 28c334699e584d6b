"""A linear layer with fused post-ops as a registered operator (Python, over oneDNN):

`torch.ops.genvis.linear_pointwise(x, weight, bias, residual, activation)` = `activation(F.linear(x, weight, bias)
+ residual?)` (activation `"none"`, `"relu"` or `"gelu"`, the exact erf form), computed as a 1x1 convolution over a
channels-last view of `x` (`[..., C_in]` seen, without a copy, as a `[1, C_in, rows, 1]` image), with the bias, the
add and the activation as oneDNN post-ops. On AMD EPYCs oneDNN's
convolution runs these products much faster than the MKL GEMM behind `F.linear` (see
`genvis_hf.settings.linear_uses_onednn`); on any CPU the post-ops save separate passes over the output. `reference` is the separate ops;
tests/test_ops_fused.py compares the two. CPU, float32 or bfloat16, contiguous `x`, no autograd (inference only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..library import define_op

__all__ = ["linear_pointwise", "reference"]


def _as_image(x: torch.Tensor) -> torch.Tensor:
    """`[..., C]` contiguous -> `[1, C, rows, 1]` with channels-last strides (a view)."""
    return x.reshape(1, -1, 1, x.shape[-1]).permute(0, 3, 1, 2)


ACTIVATIONS = ("none", "relu", "gelu")


def _linear_pointwise_cpu(x, weight, bias, residual, activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"linear_pointwise: activation must be one of {ACTIVATIONS}, got {activation!r}")
    channels_out, channels_in = weight.shape
    x = x.contiguous()
    kernel = weight.view(channels_out, channels_in, 1, 1)
    geometry = ([0, 0], [1, 1], [1, 1], 1)
    if residual is None:  # algorithm "none" with "gelu": oneDNN's exact (erf) GELU, as F.gelu
        out = torch.ops.mkldnn._convolution_pointwise(_as_image(x), kernel, bias, *geometry, activation, [], "none")
    else:  # oneDNN fuses a ReLU after the add, not a GELU: that one runs as its own pass
        out = torch.ops.mkldnn._convolution_pointwise.binary(
            _as_image(x), _as_image(residual.contiguous()), kernel, bias, *geometry, "add", 1.0,
            "relu" if activation == "relu" else None, [], "none",
        )  # fmt: skip
        if activation == "gelu":
            out = F.gelu(out)
    return out.permute(0, 2, 3, 1).reshape(*x.shape[:-1], channels_out)  # [1, C_out, rows, 1] -> [..., C_out]


def _linear_pointwise_fake(x, weight, bias, residual, activation):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


define_op(
    "linear_pointwise(Tensor x, Tensor weight, Tensor? bias, Tensor? residual, str activation) -> Tensor",
    cpu=_linear_pointwise_cpu,
    fake=_linear_pointwise_fake,
)


def linear_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                     residual: torch.Tensor | None = None, activation: str = "none") -> torch.Tensor:  # fmt: skip
    """`activation(F.linear(x, weight, bias) + residual?)` as one oneDNN 1x1 convolution; `residual` has the output's
    shape. Returns a contiguous `[..., C_out]` tensor."""
    return torch.ops.genvis.linear_pointwise(x, weight, bias, residual, activation)


def reference(x, weight, bias=None, *, residual=None, activation="none") -> torch.Tensor:
    out = F.linear(x, weight, bias)
    if residual is not None:
        out = out + residual
    return {"none": lambda t: t, "relu": F.relu, "gelu": F.gelu}[activation](out)
