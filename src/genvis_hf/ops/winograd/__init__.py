"""3x3 convolutions by Winograd F(4x4, 3x3) as a registered operator (C++ for CPUs, `csrc/`):

`torch.ops.genvis.winograd_conv3x3(x, transformed_weight, bias, relu)` = `relu?(F.conv2d(x, weight, bias,
padding=1))` for a stride-1 3x3 convolution, from `transformed_weight = transform_weight(weight)`: 36 matrix
products over 4x4 output tiles instead of one per output pixel and filter tap, 4x fewer multiply-adds, which on
CPUs where oneDNN's direct convolution already runs at the machine's peak is the only way left to make it faster.
The transforms are in `csrc/winograd_cpu.cpp` (which explains the algorithm); the filter transform is done here,
in float64.

Not bit-exact: the transformed sums round differently. Measured max error against a float64 convolution, 256
input channels, outputs of magnitude ~7: 3.3e-5 vs 1.5e-5 for oneDNN's direct float32 convolution (the
interpolation points are chosen for accuracy, see the C++ file). `reference` is the convolution it replaces;
tests/test_ops_winograd.py compares the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..build import load_library

__all__ = ["reference", "transform_weight", "winograd_conv3x3"]

# G [6, 3] of F(4x4, 3x3) with interpolation points 0, -1, 1, 1/2, -2 and infinity: row j evaluates the filter
# polynomial at point p_j, divided by prod_{l != j} (p_j - p_l) (the last row: its leading coefficient).
FILTER_TRANSFORM = (
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
    g = torch.tensor(FILTER_TRANSFORM, dtype=torch.float64, device=weight.device)
    transformed = torch.einsum("ai,ocij,bj->abco", g, weight.detach().double(), g)  # [6, 6, C_in, C_out]
    return transformed.reshape(36, weight.shape[1], weight.shape[0]).float().contiguous()


def winograd_conv3x3(x: torch.Tensor, transformed_weight: torch.Tensor, bias: torch.Tensor | None = None,
                     relu: bool = False) -> torch.Tensor:  # fmt: skip
    """`relu?(F.conv2d(x, weight, bias, padding=1))` from `transformed_weight = transform_weight(weight)`.

    Args:
        x: `[N, C_in, H, W]` float32 on the CPU (made channels-last if it is not).
        transformed_weight: `[36, C_in, C_out]`. bias: `[C_out]` or None. relu: apply a ReLU to the result.

    Returns:
        `[N, C_out, H, W]`, channels-last.
    """
    load_library("cpu")
    x = x.contiguous(memory_format=torch.channels_last)
    return torch.ops.genvis.winograd_conv3x3(x, transformed_weight, None if bias is None else bias.contiguous(), relu)


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, relu: bool = False):
    """The convolution `winograd_conv3x3` replaces: 3x3, stride 1, padding 1, then an optional ReLU."""
    out = F.conv2d(x, weight, bias, padding=1)
    return F.relu(out) if relu else out


def _fake(x, transformed_weight, bias, relu):
    batch, _, height, width = x.shape
    return torch.empty(
        (batch, transformed_weight.shape[2], height, width),
        dtype=x.dtype,
        device=x.device,
        memory_format=torch.channels_last,
    )


def register_python_parts() -> None:
    torch.library.register_fake("genvis::winograd_conv3x3", _fake)
