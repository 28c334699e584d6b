"""A convolution with fused post-ops as a registered operator (Python, over oneDNN):

`torch.ops.genvis.conv2d_pointwise(x, weight, bias, padding, stride, dilation, groups, residual, relu)` =
`relu?(F.conv2d(x, weight, bias, stride, padding, dilation, groups) + residual?)`, run as ONE oneDNN convolution
over channels-last maps with the add and the ReLU as post-ops (`torch.ops.mkldnn._convolution_pointwise`, what
inductor emits on CPUs). With a batch norm folded into `weight` and `bias` (the ResNet's frozen BN) it replaces
four passes over each map (conv, BN, add, ReLU) and oneDNN's NCHW reorders by one. `reference` is the separate ops;
tests/test_ops_fused.py compares the two. CPU, float32 or bfloat16, no autograd (inference only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..library import define_op

__all__ = ["available", "conv2d_pointwise", "reference"]


def available() -> bool:
    """Whether this torch build has oneDNN's fused convolution."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _conv2d_pointwise_cpu(x, weight, bias, padding, stride, dilation, groups, residual, relu):
    x = x.contiguous(memory_format=torch.channels_last)
    geometry = (padding, stride, dilation, groups)
    if residual is None:
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *geometry, "relu" if relu else "none", [], "")
    residual = residual.contiguous(memory_format=torch.channels_last)
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, residual, weight, bias, *geometry, "add", 1.0, "relu" if relu else None, [], None
    )


def _conv2d_pointwise_fake(x, weight, bias, padding, stride, dilation, groups, residual, relu):
    size = [x.shape[0], weight.shape[0]]
    for i in range(2):
        span = dilation[i] * (weight.shape[2 + i] - 1) + 1
        size.append((x.shape[2 + i] + 2 * padding[i] - span) // stride[i] + 1)
    return torch.empty(size, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


define_op(
    "conv2d_pointwise(Tensor x, Tensor weight, Tensor? bias, int[] padding, int[] stride, int[] dilation, "
    "int groups, Tensor? residual, bool relu) -> Tensor",
    cpu=_conv2d_pointwise_cpu,
    fake=_conv2d_pointwise_fake,
)


def conv2d_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv: torch.nn.Conv2d, *,
                     residual: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:  # fmt: skip
    """`relu?(conv(x) with weight and bias + residual?)`, with `conv`'s padding, stride, dilation and groups.
    `weight` should be channels-last (oneDNN's layout: no reorder per call). Returns a channels-last map."""
    return torch.ops.genvis.conv2d_pointwise(
        x, weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, residual, relu
    )


def reference(x, weight, bias, conv: torch.nn.Conv2d, *, residual=None, relu=False) -> torch.Tensor:
    out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    if residual is not None:
        out = out + residual
    return F.relu(out) if relu else out
