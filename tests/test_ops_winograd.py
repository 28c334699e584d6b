"""Winograd F(4x4, 3x3) convolutions at CPU inference (`genvis_hf.modeling.winograd`, kernel in
`deformable_attention/csrc/winograd_cpu.cpp`): accuracy against a float64 convolution on every tile/edge case,
where the model uses it, and where it must not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deformable_attention_helpers import require_backend
from genvis_hf.modeling import inference_ops, winograd
from genvis_hf.modeling.inference_ops import inference_ops_disabled
from genvis_hf.modeling.backbone_resnet import ConvFrozenBN
from genvis_hf.modeling.layers import ConvNormActivation


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
    g = torch.tensor(winograd._FILTER_TRANSFORM, dtype=torch.float64)
    # position (a, b) of output channel o, input channel c: (G w[o, c] G^T)[a, b]
    expected = g @ weight[4, 2] @ g.T
    assert torch.equal(transformed[:, 2, 4], expected.reshape(36).float())


def test_conv_norm_activation_runs_3x3_convs_by_winograd_at_inference_only(monkeypatch):
    calls = []
    original = winograd.winograd_conv3x3

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr("genvis_hf.modeling.layers.winograd_conv3x3", counting)
    torch.manual_seed(0)
    block = ConvNormActivation(64, 64, 3, activation=True).eval()
    x = torch.randn(2, 64, 17, 23)
    with torch.no_grad():
        fast = block(x)
        with inference_ops_disabled():
            reference = block(x)
    assert len(calls) == 1  # the disabled block ran torch's convolution
    assert torch.allclose(fast, reference, atol=2e-5, rtol=0)
    training = block(x.requires_grad_())  # autograd: torch's convolution, gradients flow to the weight
    training.sum().backward()
    assert len(calls) == 1 and block.conv.weight.grad is not None
    monkeypatch.setenv(inference_ops.DISABLE_ENV, "0")
    with torch.no_grad():
        assert torch.equal(block(x), reference)
    assert len(calls) == 1
    one_by_one = ConvNormActivation(64, 64, 1, activation=False).eval()
    with torch.no_grad():
        one_by_one(x)
    assert len(calls) == 1


def test_transformed_weights_follow_in_place_weight_changes():
    torch.manual_seed(0)
    block = ConvNormActivation(32, 32, 3, activation=False).eval()
    x = torch.randn(1, 32, 9, 9)
    with torch.no_grad():
        before = block(x)
        block.conv.weight.mul_(-1.0)  # as an optimizer step or load_state_dict would
        after = block(x)
        with inference_ops_disabled():
            reference = block(x)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, reference, atol=2e-5, rtol=0)


def test_fused_resnet_conv_uses_winograd_for_stride_1_only(monkeypatch):
    calls = []
    original = winograd.winograd_conv3x3
    monkeypatch.setattr("genvis_hf.modeling.backbone_resnet.winograd_conv3x3",
                        lambda *a, **k: calls.append(1) or original(*a, **k))  # fmt: skip
    torch.manual_seed(0)
    x = torch.randn(2, 32, 15, 21)
    for stride, expected_calls in [(1, 1), (2, 1)]:
        layer = ConvFrozenBN(32, 48, kernel_size=3, stride=stride).eval()
        with torch.no_grad():
            layer.norm.weight.uniform_(0.5, 1.5)
            layer.norm.bias.normal_()
            layer.norm.running_mean.normal_()
            layer.norm.running_var.uniform_(0.5, 2.0)
            fast = layer(x, relu=True)
        reference = layer(x, relu=True).detach()  # autograd on: conv, frozen BN and ReLU as separate ops
        assert len(calls) == expected_calls
        assert fast.is_contiguous(memory_format=torch.channels_last)
        assert (fast - reference).abs().max().item() <= 1e-5 * max(1.0, reference.abs().max().item())


def test_kernel_rejects_mismatched_transformed_weights_with_a_clear_error():
    x = torch.randn(1, 8, 6, 6)
    with pytest.raises(RuntimeError, match=r"transformed_weight must be contiguous float32 \[36, 8, C_out\]"):
        winograd.winograd_conv3x3(x, torch.zeros(36, 16, 8))
    with pytest.raises(RuntimeError, match=r"bias must be contiguous float32 \[8\]"):
        winograd.winograd_conv3x3(x, torch.zeros(36, 8, 8), torch.zeros(4))
