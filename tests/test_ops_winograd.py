"""The Winograd F(4x4, 3x3) operator (`torch.ops.genvis.winograd_conv3x3`, `genvis_hf/ops/winograd/`): accuracy
against a float64 convolution on every tile/edge case, the filter transform, its reference, argument checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from deformable_attention_helpers import require_backend

from genvis_hf.ops import winograd


@pytest.fixture(autouse=True)
def jit_cpu():
    require_backend("jit", "cpu")


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.double() - expected).abs().max().item() / expected.abs().max().item()


@pytest.mark.parametrize(
    "batch, in_channels, out_channels, height, width",
    [
        (1, 256, 256, 22, 30),  # the pixel decoder's shape class: full 16-channel blocks, whole tiles
        (2, 20, 36, 13, 7),  # channel remainders (16 + 4, 32 + 4), partial tiles on both edges
        (3, 48, 16, 5, 3),  # a map smaller than one tile in width
        (1, 16, 32, 1, 1),  # a single pixel: all but the centre tap read padding
    ],
)
@pytest.mark.parametrize("with_bias, relu", [(False, False), (True, True)])
def test_winograd_conv3x3_matches_a_float64_convolution(batch, in_channels, out_channels, height, width, with_bias,
                                                        relu):  # fmt: skip
    generator = torch.Generator().manual_seed(in_channels + height)
    x = torch.randn(batch, in_channels, height, width, generator=generator)
    weight = torch.randn(out_channels, in_channels, 3, 3, generator=generator) * (2 / (9 * in_channels)) ** 0.5
    bias = torch.randn(out_channels, generator=generator) if with_bias else None
    expected = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(), padding=1)
    if relu:
        expected = expected.relu()
    actual = winograd.winograd_conv3x3(x, winograd.transform_weight(weight), bias, relu=relu)
    assert actual.shape == expected.shape and actual.dtype == torch.float32
    assert actual.is_contiguous(memory_format=torch.channels_last)
    # float32 direct convolutions reach ~2e-6 relative here; the points 0, +-1, 1/2, -2 keep Winograd within 1e-5
    # (a wrong transform coefficient gives errors of order 1)
    assert _relative_error(actual, expected) < 1e-5
    if relu:
        assert (actual >= 0).all()


def test_transform_weight_is_position_major_and_computed_in_float64():
    weight = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    transformed = winograd.transform_weight(weight)
    assert transformed.shape == (36, 3, 5) and transformed.dtype == torch.float32 and transformed.is_contiguous()
    g = torch.tensor(winograd.FILTER_TRANSFORM, dtype=torch.float64)
    # position (a, b) of output channel o, input channel c: (G w[o, c] G^T)[a, b]
    expected = g @ weight[4, 2] @ g.T
    assert torch.equal(transformed[:, 2, 4], expected.reshape(36).float())


def test_reference_is_the_convolution_it_replaces():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 24, 11, 13, generator=generator)
    weight = torch.randn(16, 24, 3, 3, generator=generator) * (2 / (9 * 24)) ** 0.5
    bias = torch.randn(16, generator=generator)
    actual = winograd.winograd_conv3x3(x, winograd.transform_weight(weight), bias, relu=True)
    torch.testing.assert_close(actual, winograd.reference(x, weight, bias, relu=True), rtol=0, atol=2e-5)


def test_kernel_rejects_mismatched_transformed_weights_with_a_clear_error():
    x = torch.randn(1, 8, 6, 6)
    with pytest.raises(RuntimeError, match=r"transformed_weight must be contiguous float32 \[36, 8, C_out\]"):
        winograd.winograd_conv3x3(x, torch.zeros(36, 16, 8))
    with pytest.raises(RuntimeError, match=r"bias must be contiguous float32 \[8\]"):
        winograd.winograd_conv3x3(x, torch.zeros(36, 8, 8), torch.zeros(4))
