"""The registered operators (`torch.ops.genvis.*`, `genvis_hf/ops/`) as torch.library operators: schema, fake
(meta) implementation, autograd registration and AOT dispatch checked by `torch.library.opcheck`, and each one
traced by torch.compile as a single graph. Their numerics against the references are in test_ops_*.py and
test_deformable_attention.py."""

from __future__ import annotations

import pytest
import torch
from deformable_attention_helpers import make_inputs, require_backend

from genvis_hf.ops import fused_conv, linear, winograd


def _channels_last(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).contiguous(
        memory_format=torch.channels_last
    )


def _cases():
    """(operator name, args, needs the C++ library) for every operator, on small inputs."""
    value, shapes, _, starts, locations, weights = make_inputs(2, [(5, 6), (3, 2)], 2, 4, 7, 3, seed=1)
    reference_points = torch.rand(2, 7, 2, 2)
    offsets, logits = torch.randn(2, 7, 2 * 2 * 3 * 2), torch.randn(2, 7, 2 * 2 * 3)
    x = _channels_last(2, 8, 9, 10)
    weight = torch.randn(6, 8, 3, 3)
    mask = torch.rand(2, 5, 11) > 0.3
    mask[..., 0] = True
    conv_weight = torch.randn(6, 8, 3, 3).contiguous(memory_format=torch.channels_last)
    rows = torch.randn(3, 70, 16)
    return [
        ("ms_deform_attn", (value, shapes, starts, locations, weights), True),
        ("ms_deform_attn_from_projections", (value, shapes, starts, reference_points, offsets, logits, 3), True),
        ("winograd_conv3x3", (x, winograd.transform_weight(weight), torch.randn(6), True), True),
        ("masked_attention", (torch.randn(2, 5, 8), torch.randn(2, 11, 8), torch.randn(2, 11, 8), mask, 2), True),
        ("conv2d_pointwise", (x, conv_weight, torch.randn(6), [1, 1], [2, 2], [1, 1], 1, None, True), False),
        ("conv2d_pointwise", (x, conv_weight, None, [1, 1], [1, 1], [1, 1], 1, _channels_last(2, 6, 9, 10, seed=2), False),
         False),
        ("linear_pointwise", (rows, torch.randn(24, 16), torch.randn(24), torch.randn(3, 70, 24), "relu"), False),
        ("linear_pointwise", (rows, torch.randn(24, 16), torch.randn(24), None, "gelu"), False),
        ("window_attention", (torch.randn(6, 9, 24), torch.randn(2, 9, 9), torch.randn(3, 9, 9), 2, 0.25), True),
    ]  # fmt: skip


CASES = _cases()


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_opcheck(case):
    name, args, compiled = CASES[case]
    if compiled:
        require_backend("jit", "cpu")
    op = getattr(torch.ops.genvis, name).default
    torch.library.opcheck(op, args)


def test_ms_deform_attn_opcheck_with_gradients():
    """The autograd formula is registered: opcheck's autograd and AOT checks run with inputs that need gradients."""
    require_backend("jit", "cpu")
    value, shapes, _, starts, locations, weights = make_inputs(1, [(4, 3), (2, 2)], 2, 4, 5, 2, seed=4)
    leaves = [t.requires_grad_(True) for t in (value, locations, weights)]
    torch.library.opcheck(torch.ops.genvis.ms_deform_attn.default, (leaves[0], shapes, starts, leaves[1], leaves[2]))


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_operator_is_traced_into_one_graph(case):
    """torch.compile(fullgraph=True) through the operator (its fake implementation gives the shapes, strides and
    dtype the graph needs); the compiled call equals the eager one."""
    name, args, compiled = CASES[case]
    if compiled:
        require_backend("jit", "cpu")
    op = getattr(torch.ops.genvis, name)
    torch._dynamo.reset()
    try:
        traced = torch.compile(lambda *a: op(*a) * 1.0, fullgraph=True, backend="aot_eager")
        with torch.no_grad():
            torch.testing.assert_close(traced(*args), op(*args), rtol=0, atol=0)
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("post_ops", [{}, {"activation": "relu"}, {"activation": "gelu"}, {"residual": True},
                                      {"residual": True, "activation": "gelu"}])  # fmt: skip
def test_linear_pointwise_equals_its_reference_with_any_leading_dims(post_ops):
    generator = torch.Generator().manual_seed(6)
    x, weight, bias = torch.randn(2, 3, 100, 32, generator=generator), torch.randn(8, 32, generator=generator), None
    kwargs = {"activation": post_ops.get("activation", "none")}
    if post_ops.get("residual"):
        kwargs["residual"] = torch.randn(2, 3, 100, 8, generator=generator)
    out = linear.linear_pointwise(x, weight, bias, **kwargs)
    assert out.shape == (2, 3, 100, 8) and out.is_contiguous()
    torch.testing.assert_close(out, linear.reference(x, weight, bias, **kwargs), rtol=1e-5, atol=1e-5)


def test_conv2d_pointwise_equals_its_reference():
    conv = torch.nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=True)
    x = _channels_last(2, 8, 9, 10)
    residual = _channels_last(2, 6, 5, 5, seed=3)
    weight = conv.weight.detach().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = fused_conv.conv2d_pointwise(x, weight, conv.bias, conv, residual=residual, relu=True)
        expected = fused_conv.reference(x, conv.weight, conv.bias, conv, residual=residual, relu=True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
