"""3x3 convolutions by Winograd F(4x4, 3x3) at CPU inference.

A 3x3, stride-1 convolution computed as 36 matrix products over 4x4 output tiles instead of one per output pixel
and filter tap: 4x fewer multiply-adds, which on CPUs where oneDNN's direct convolution already runs at the
machine's peak (the pixel decoder's stride-4 3x3 conv, 256 -> 256 channels at 90x120: 12.7 GFLOP, ~29 ms a frame
on 2 cores) is the only way left to make it faster (~12 ms). The transforms are in the jit CPU extension
(`deformable_attention/csrc/winograd_cpu.cpp`, which also explains the algorithm); the filter transform is done
here, in float64, and cached until the weights change.

Not bit-exact: the transformed sums round differently. Measured max error against a float64 convolution, 256
input channels, outputs of magnitude ~7: 3.3e-5 here vs 1.5e-5 for oneDNN's direct float32 convolution (the
interpolation points are chosen for accuracy, see the C++ file). The parity tests against the original's fixtures
run through this path with their unchanged tolerances.

Used only where it is exact up to that rounding and faster: float32, CPU, no autograd, 3x3 kernel, stride 1,
padding 1, no dilation, no groups, and the jit extension loadable; `GENVIS_HF_INFERENCE_OPS=0` (or
`inference_ops_disabled()` within a block) turns it off, see `inference_ops.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from .inference_ops import inference_op

# G [6, 3] of F(4x4, 3x3) with interpolation points 0, -1, 1, 1/2, -2 and infinity: row j evaluates the filter
# polynomial at point p_j, divided by prod_{l != j} (p_j - p_l) (the last row: its leading coefficient).
_FILTER_TRANSFORM = (
    (1.0, 0.0, 0.0),
    (-1 / 3, 1 / 3, -1 / 3),
    (1 / 3, 1 / 3, 1 / 3),
    (-16 / 15, -8 / 15, -4 / 15),
    (1 / 15, -2 / 15, 4 / 15),
    (0.0, 0.0, 1.0),
)


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """Filters `[C_out, C_in, 3, 3]` -> their Winograd transform `G g G^T`, position-major `[36, C_in, C_out]`
    float32 (computed in float64: the transform adds no rounding of its own)."""
    g = torch.tensor(_FILTER_TRANSFORM, dtype=torch.float64, device=weight.device)
    transformed = torch.einsum("ai,ocij,bj->abco", g, weight.detach().double(), g)  # [6, 6, C_in, C_out]
    return transformed.reshape(36, weight.shape[1], weight.shape[0]).float().contiguous()


def winograd_applies(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """Whether `conv(x)` can run as `winograd_conv3x3` (see the module docstring)."""
    return (
        not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and conv.weight.dtype == torch.float32
        and tuple(conv.kernel_size) == (3, 3)
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.padding) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and inference_op("winograd_conv3x3") is not None
    )


def winograd_conv3x3(x: torch.Tensor, transformed_weight: torch.Tensor, bias: torch.Tensor | None = None,
                     relu: bool = False) -> torch.Tensor:  # fmt: skip
    """`relu?(F.conv2d(x, weight, bias, padding=1))` from `transformed_weight = transform_weight(weight)`.

    Args:
        x: `[N, C_in, H, W]` float32 on the CPU (made channels-last if it is not).
        transformed_weight: `[36, C_in, C_out]`.
        bias: `[C_out]` or None. relu: apply a ReLU to the result.

    Returns:
        `[N, C_out, H, W]`, channels-last.
    """
    kernel = inference_op("winograd_conv3x3")
    if kernel is None:
        raise RuntimeError("winograd_conv3x3 needs the jit CPU extension, which is unavailable here")
    x = x.contiguous(memory_format=torch.channels_last)
    return kernel(x, transformed_weight, None if bias is None else bias.contiguous(), relu)
