"""Multi-scale deformable attention backends: agreement with the `torch` reference (values and gradients),
gradcheck, the fast path's inference layer, and the selection rules (`auto` never fails where `torch` works; an
unavailable backend says why in one line).

The operator library compiles once per machine (~30 s on 2 cores) into torch's extensions folder and is reused
by later runs; every test after the first reuses the library loaded in this process.
"""

from __future__ import annotations

import pytest
import torch
from deformable_attention_helpers import DEVICES, FAST_BACKEND_DEVICES, make_inputs, require_backend
from hypothesis import given, settings
from hypothesis import strategies as st

from genvis_hf.modeling import deformable_attention as dispatch
from genvis_hf.modeling.deformable_attention import (
    DeformableAttentionBackendUnavailable,
    MultiScaleDeformableAttention,
    clear_backend_cache,
    multi_scale_deformable_attention,
    resolve_backend,
    unavailable_reason,
)
from genvis_hf.ops import build
from genvis_hf.ops.ms_deform_attn import backends
from genvis_hf.ops.ms_deform_attn.backends import im2col_step_for
from genvis_hf.optimization import optimize_for_inference
from genvis_hf.settings import settings_override

ATOL = 1e-5
CASES = {
    # batch, (H, W) per level, heads, head_dim, queries, points
    "three_odd_levels": (2, [(7, 9), (4, 5), (2, 3)], 3, 5, 11, 3),
    "one_level": (1, [(6, 4)], 2, 8, 9, 4),
    "four_levels_1px": (3, [(9, 11), (5, 6), (3, 3), (1, 1)], 2, 16, 5, 2),
    "wide_head": (2, [(13, 7), (7, 4)], 1, 33, 6, 1),
    # Mask2Former's shape (8 heads x 32 channels, 3 levels x 4 points): the CPU inference kernel's AVX2 path
    "mask2former_heads": (2, [(6, 7), (3, 4), (2, 2)], 8, 32, 13, 4),
}


@pytest.fixture
def fresh_backends():
    """Forget every remembered probe and build failure before and after the test (a loaded library stays loaded)."""
    clear_backend_cache()
    yield
    clear_backend_cache()


@pytest.fixture
def unloaded(monkeypatch):
    """Within the test, the operator library counts as not loaded yet, so a (simulated) build runs again."""
    monkeypatch.setattr(build, "_loaded", set())


def _run(name, inputs):
    return multi_scale_deformable_attention(*inputs, backend=name)


# ---------------------------------------------------------------------------------------------- agreement
@pytest.mark.parametrize(("backend", "device"), FAST_BACKEND_DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_torch(backend, device, case):
    require_backend(backend, device)
    inputs = make_inputs(*CASES[case], device=device, seed=len(case))
    expected = _run("torch", inputs)
    actual = _run(backend, inputs)
    batch, _, heads, head_dim = inputs[0].shape
    assert actual.shape == expected.shape == (batch, inputs[4].shape[1], heads * head_dim)
    error = (actual - expected).abs().max().item()
    assert error <= ATOL, f"{backend} vs torch: max abs error {error:.3g}"


@pytest.mark.parametrize(("backend", "device"), FAST_BACKEND_DEVICES)
def test_edge_locations_match_torch(backend, device):
    """Locations exactly on pixel centres, on the map borders, half a pixel outside and far outside."""
    require_backend(backend, device)
    value, shapes, shapes_list, starts, _, weights = make_inputs(2, [(5, 7), (3, 2)], 2, 4, 12, 12, device=device)
    special = torch.tensor([0.0, 1.0, 0.5, -0.5 / 7, 1 + 0.5 / 7, 1 / 14, 13 / 14, -3.0, 4.0, 0.25, -1e-7, 1 + 1e-7])
    # every (x, y) pair of special values: query i holds y = special[i] with the 12 x values as its points
    grid = torch.stack(torch.broadcast_tensors(special[None, :], special[:, None]), -1)  # [12, 12, 2]
    locations = grid[None, :, None, None, :, :].expand(2, 12, 2, 2, 12, 2).contiguous().to(device)
    inputs = (value, shapes, shapes_list, starts, locations, weights)
    error = (_run(backend, inputs) - _run("torch", inputs)).abs().max().item()
    assert error <= ATOL


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    shapes=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=4),
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 12),
    queries=st.integers(1, 7),
    points=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_jit_cpu_matches_torch_on_random_shapes(batch, shapes, heads, head_dim, queries, points, seed):
    require_backend("jit", "cpu")
    inputs = make_inputs(batch, shapes, heads, head_dim, queries, points, seed=seed)
    error = (_run("jit", inputs) - _run("torch", inputs)).abs().max().item()
    assert error <= ATOL


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_jit_other_dtypes(device, dtype):
    """Half and bfloat16 accumulate in float32: compare with float32 torch on the same rounded inputs."""
    require_backend("jit", device)
    inputs = make_inputs(2, [(7, 9), (4, 5)], 2, 8, 10, 3, dtype=dtype, device=device)
    actual = _run("jit", inputs)
    assert actual.dtype == dtype
    as_float = [t.float() if torch.is_tensor(t) and t.is_floating_point() else t for t in inputs]
    expected = _run("torch", as_float)
    tolerance = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float64: 1e-6}[dtype]
    assert (actual.float() - expected).abs().max().item() <= tolerance


# ---------------------------------------------------------------------------------------------- gradients
def _gradients(name, inputs, grad_output):
    value, shapes, shapes_list, starts, locations, weights = inputs
    leaves = [t.detach().clone().requires_grad_(True) for t in (value, locations, weights)]
    output = multi_scale_deformable_attention(leaves[0], shapes, shapes_list, starts, leaves[1], leaves[2], name)
    return torch.autograd.grad(output, leaves, grad_output)


@pytest.mark.parametrize(("backend", "device"), FAST_BACKEND_DEVICES)
@pytest.mark.parametrize("case", ["three_odd_levels", "four_levels_1px"])
def test_gradients_match_torch(backend, device, case):
    require_backend(backend, device)
    inputs = make_inputs(*CASES[case], device=device, seed=3)
    grad_output = torch.randn_like(_run("torch", inputs))
    expected = _gradients("torch", inputs, grad_output)
    actual = _gradients(backend, inputs, grad_output)
    for name, a, e in zip(("value", "sampling_locations", "attention_weights"), actual, expected):
        # location gradients carry a factor of the map size: compare relative to their scale
        scale = max(1.0, e.abs().max().item())
        error = (a - e).abs().max().item() / scale
        assert error <= 1e-5, f"{backend} d/d{name}: relative error {error:.3g}"


@pytest.mark.parametrize("device", DEVICES)
def test_jit_gradcheck(device):
    require_backend("jit", device)
    value, shapes, shapes_list, starts, locations, weights = make_inputs(
        2, [(4, 5), (2, 3)], 2, 3, 4, 2, dtype=torch.float64, device=device, seed=7
    )

    def function(value, locations, weights):
        return multi_scale_deformable_attention(value, shapes, shapes_list, starts, locations, weights, "jit")

    leaves = [t.requires_grad_(True) for t in (value, locations, weights)]
    assert torch.autograd.gradcheck(function, leaves, eps=1e-6, atol=1e-5)


def test_jit_refuses_double_backward():
    """The kernels are differentiable once: asking for a second derivative must raise, not return zeros."""
    require_backend("jit", "cpu")
    value, shapes, shapes_list, starts, locations, weights = make_inputs(1, [(3, 4)], 1, 2, 3, 2, seed=2)
    locations.requires_grad_(True)
    output = multi_scale_deformable_attention(value, shapes, shapes_list, starts, locations, weights, "jit")
    (grad,) = torch.autograd.grad(output.square().sum(), locations, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.sum().backward()


def test_jit_module_training_step_matches_torch():
    """The layer (projections + core) gives the torch backend's parameter gradients with the jit core."""
    require_backend("jit", "cpu")
    torch.manual_seed(0)
    layer = MultiScaleDeformableAttention(embed_dim=16, num_levels=2, num_heads=2, num_points=3, backend="torch")
    shapes_list = [(5, 6), (3, 3)]
    shapes = torch.tensor(shapes_list)
    starts = torch.tensor([0, 30])
    states = torch.randn(2, 39, 16)
    reference = torch.rand(2, 39, 2, 2)
    grads = {}
    for name in ("torch", "jit"):
        layer.backend = name
        layer.zero_grad()
        layer(states, reference, states, shapes, shapes_list, starts).square().sum().backward()
        grads[name] = {key: p.grad.clone() for key, p in layer.named_parameters()}
    for key, expected in grads["torch"].items():
        torch.testing.assert_close(grads["jit"][key], expected, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("case", list(CASES))
def test_jit_inference_from_projections_matches_the_torch_layer(case):
    """CPU inference with the jit kernels computes the softmax and the sampling locations inside the kernel
    (`forward_from_projections`); the layer's output equals the torch backend's separate passes. Offsets of
    several pixels push samples outside the maps, and the queries differ from the values (decoder-like)."""
    require_backend("jit", "cpu")
    batch, shapes_list, heads, head_dim, queries, points = CASES[case]
    torch.manual_seed(len(case))
    layer = MultiScaleDeformableAttention(heads * head_dim, len(shapes_list), heads, points, backend="torch").eval()
    torch.nn.init.normal_(layer.sampling_offsets.bias, std=3.0)
    torch.nn.init.normal_(layer.attention_weights.weight, std=0.5)
    shapes = torch.tensor(shapes_list)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    states = torch.randn(batch, int(sizes.sum()), heads * head_dim)
    query_states = torch.randn(batch, queries, heads * head_dim)
    reference = torch.rand(batch, queries, len(shapes_list), 2)
    with torch.no_grad():
        expected = layer(query_states, reference, states, shapes, shapes_list, starts)
        optimize_for_inference(layer)
        layer.backend = "jit"
        assert layer.fused_path_applies(query_states, states)
        actual = layer(query_states, reference, states, shapes, shapes_list, starts)
    torch.testing.assert_close(actual, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("logit_scale", [0.0, 1.0, 40.0])
def test_jit_inference_softmax_matches_torch_for_flat_and_extreme_logits(logit_scale):
    """The inference kernel's own exp (AVX2 polynomial) against torch's softmax: equal logits, ordinary ones, and
    spreads of hundreds where most weights underflow to zero."""
    require_backend("jit", "cpu")
    torch.manual_seed(7)
    layer = MultiScaleDeformableAttention(256, 3, 8, 4, backend="torch").eval()
    torch.nn.init.normal_(layer.attention_weights.weight, std=logit_scale / 16)
    torch.nn.init.normal_(layer.attention_weights.bias, std=logit_scale)
    shapes_list = [(6, 7), (3, 4), (2, 2)]
    shapes = torch.tensor(shapes_list)
    starts = torch.tensor([0, 42, 54])
    states = torch.randn(1, 58, 256)
    reference = torch.rand(1, 58, 3, 2)
    with torch.no_grad():
        expected = layer(states, reference, states, shapes, shapes_list, starts)
        optimize_for_inference(layer)
        layer.backend = "jit"
        actual = layer(states, reference, states, shapes, shapes_list, starts)
    # tight: an exp off by 1e-5 relative fails this (float32 rounding of the sums stays below it)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("backend", ["torch", "jit"])
@pytest.mark.parametrize("grad", [False, True])
def test_layer_residual_is_added_to_the_output(backend, grad):
    require_backend(backend, "cpu")
    torch.manual_seed(3)
    layer = optimize_for_inference(MultiScaleDeformableAttention(32, 2, 2, 2, backend=backend).eval())
    shapes_list = [(48, 60), (24, 30)]  # 3600 tokens: large enough for the fused output projection (fast_linear)
    states, reference = torch.randn(1, 3600, 32), torch.rand(1, 3600, 2, 2)
    residual = torch.randn(1, 3600, 32)
    args = (states, reference, states, torch.tensor(shapes_list), shapes_list, torch.tensor([0, 2880]))
    with torch.set_grad_enabled(grad):
        expected = residual + layer(*args)
        actual = layer(*args, residual=residual)
    torch.testing.assert_close(actual, expected, rtol=0, atol=ATOL)


def test_fused_projection_weights_follow_parameter_updates():
    require_backend("jit", "cpu")
    layer = optimize_for_inference(MultiScaleDeformableAttention(16, 2, 2, 2, backend="jit").eval())
    shapes_list = [(4, 5), (2, 3)]
    states, reference = torch.randn(1, 26, 16), torch.rand(1, 26, 2, 2)
    args = (states, reference, states, torch.tensor(shapes_list), shapes_list, torch.tensor([0, 20]))
    with torch.no_grad():
        before = layer(*args)
        layer.attention_weights.weight.mul_(3.0)
        after = layer(*args)
        layer.backend = "torch"
        expected = layer(*args)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, rtol=0, atol=ATOL)


def test_forward_from_projections_refuses_mismatched_inputs_in_one_line():
    require_backend("jit", "cpu")
    op = torch.ops.genvis.ms_deform_attn_from_projections
    value = torch.randn(1, 20, 2, 4)
    shapes, starts = torch.tensor([[4, 5]]), torch.tensor([0])
    reference = torch.rand(1, 3, 1, 2)
    offsets, logits = torch.randn(1, 3, 2 * 1 * 2 * 2), torch.randn(1, 3, 2 * 1 * 2)
    assert op(value, shapes, starts, reference, offsets, logits, 2).shape == (1, 3, 8)
    with pytest.raises(RuntimeError, match=r"logits must be \[N, Lq, heads \* levels \* points\]"):
        op(value, shapes, starts, reference, offsets, logits[..., :3], 2)
    with pytest.raises(RuntimeError, match="float32"):
        op(value.double(), shapes, starts, reference, offsets, logits, 2)


# ---------------------------------------------------------------------------------------------- selection
def test_auto_resolves_to_an_available_backend_and_runs():
    device = torch.device("cpu")
    choice = resolve_backend("auto", device)
    assert unavailable_reason(choice, device) is None
    inputs = make_inputs(*CASES["three_odd_levels"])
    assert (_run("auto", inputs) - _run("torch", inputs)).abs().max().item() <= ATOL
    if build.toolchain_problem("cpu") is None:
        assert choice == "jit", "with a compiler on this machine, auto must pick the jit kernels on CPU"


def test_auto_falls_back_to_torch_when_the_jit_build_fails(fresh_backends, unloaded, monkeypatch):
    def broken_build(device_type):
        raise RuntimeError("Error building extension 'genvis_ops_cpu': simulated compiler crash\nmore")

    monkeypatch.setattr(build, "_compile_and_load", broken_build)
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    inputs = make_inputs(*CASES["one_level"])
    torch.testing.assert_close(_run("auto", inputs), _run("torch", inputs), rtol=0, atol=0)
    with pytest.raises(DeformableAttentionBackendUnavailable) as raised:
        _run("jit", inputs)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("deformable attention backend 'jit' unavailable: compiling the C++ operators failed")
    assert "simulated compiler crash" in message


def test_a_real_failing_compile_is_caught(fresh_backends, unloaded, monkeypatch, tmp_path):
    """End to end, in an empty cache: torch's extension build starts and the compiler fails on our sources (a
    wrapper around the real one that answers `--version` but rejects every compilation)."""
    compiler = tmp_path / "broken-c++"
    compiler.write_text(
        '#!/bin/sh\ncase " $* " in *" -c "*) echo "error: simulated compiler failure" >&2; exit 1;; esac\n'
        'exec c++ "$@"\n'
    )
    compiler.chmod(0o755)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    monkeypatch.setenv("CXX", str(compiler))
    # A name of its own: torch remembers every (name, sources, folder) it built in this process and renames the
    # next build of that name (`_v1`), which would make the real library recompile under a new name.
    monkeypatch.setattr(build, "library_name", lambda device_type: f"genvis_broken_build_test_{device_type}")
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(DeformableAttentionBackendUnavailable) as raised:
        resolve_backend("jit", torch.device("cpu"))
    message = str(raised.value)
    assert "\n" not in message and len(message) < 400
    assert message.startswith(
        "deformable attention backend 'jit' unavailable: compiling the C++ operators failed (RuntimeError: Error "
        "building extension 'genvis_broken_build_test_cpu"
    )


def test_auto_falls_back_when_the_operator_cannot_be_loaded(fresh_backends, monkeypatch):
    def unloadable(device):
        raise ImportError("simulated: the operator library could not be loaded")

    monkeypatch.setattr(backends.jit_backend, "_load", unloadable)
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    reason = unavailable_reason("jit", torch.device("cpu"))
    assert reason == "loading our operator failed: ImportError: simulated: the operator library could not be loaded"


def test_a_kernel_that_disagrees_with_the_reference_is_not_used(fresh_backends, monkeypatch):
    """An implementation that loads but computes something else (here: zeros) is rejected by the first-use check."""

    def wrong(value, spatial_shapes, spatial_shapes_list, level_start_index, locations, weights):
        return value.new_zeros(value.shape[0], locations.shape[1], value.shape[2] * value.shape[3])

    monkeypatch.setattr(backends.jit_backend, "_load", lambda device: wrong)
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    reason = unavailable_reason("jit", torch.device("cpu"))
    assert reason.startswith("the loaded kernel's output differs from the torch reference by ")


def test_jit_reports_a_missing_compiler(fresh_backends, unloaded, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(
        DeformableAttentionBackendUnavailable, match=r"^deformable attention backend 'jit' unavailable: "
    ) as raised:
        resolve_backend("jit", torch.device("cpu"))
    assert "no C++ compiler ('no-such-compiler-xyz' not found" in str(raised.value) and "\n" not in str(raised.value)


def test_jit_is_unavailable_while_compiled_ops_are_switched_off(fresh_backends):
    with settings_override(compiled_ops=False):
        assert resolve_backend("auto", torch.device("cpu")) == "torch"
        with pytest.raises(DeformableAttentionBackendUnavailable) as raised:
            resolve_backend("jit", torch.device("cpu"))
    assert "compiled operators are switched off" in str(raised.value) and "\n" not in str(raised.value)


def test_kernels_backend_on_cpu_says_why():
    with pytest.raises(DeformableAttentionBackendUnavailable) as raised:
        resolve_backend("kernels", torch.device("cpu"))
    assert str(raised.value) == (
        "deformable attention backend 'kernels' unavailable: "
        "the Hub kernel kernels-community/deformable-detr has CUDA builds only (device is cpu)"
    )


def test_jit_on_cuda_without_cuda_says_why(fresh_backends, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeformableAttentionBackendUnavailable) as raised:
        resolve_backend("jit", torch.device("cuda"))
    assert str(raised.value) == "deformable attention backend 'jit' unavailable: CUDA is not available"


def test_hub_kernel_failure_is_caught_and_remembered(fresh_backends, monkeypatch):
    """Offline, the Hub kernel's loader raises (ValueError, OSError, ...): caught once, remembered, one line."""
    calls = []

    def offline_load(device):
        calls.append(1)
        raise OSError("simulated: cannot reach the Hub\nsecond line")

    backend = backends.hub_kernel_backend
    monkeypatch.setattr(backend, "_load", offline_load)
    monkeypatch.setattr(backend, "_device_problem", lambda device: None)  # pretend this device has CUDA
    first = backend.unavailable_reason(torch.device("cpu"))
    second = backend.unavailable_reason(torch.device("cpu"))
    assert (
        first
        == second
        == (
            "cannot load kernels-community/deformable-detr (offline and not in the Hugging Face cache?): "
            "OSError: simulated: cannot reach the Hub second line"
        )
    )
    assert len(calls) == 1
    assert resolve_backend("auto", torch.device("cpu")) in ("jit", "torch")


def test_unknown_backend_is_refused_in_one_line():
    with pytest.raises(DeformableAttentionBackendUnavailable) as raised:
        resolve_backend("triton", torch.device("cpu"))
    assert "\n" not in str(raised.value) and "unknown deformable attention backend 'triton'" in str(raised.value)


def test_auto_choice_is_cached_per_device(fresh_backends, monkeypatch):
    probes = []
    original = dispatch.unavailable_reason

    def counting(name, device):
        probes.append(name)
        return original(name, device)

    monkeypatch.setattr(dispatch, "unavailable_reason", counting)
    first = resolve_backend("auto", torch.device("cpu"))
    count = len(probes)
    assert count >= 1
    for _ in range(3):
        assert resolve_backend("auto", torch.device("cpu")) == first
    assert len(probes) == count


def test_kernelize_puts_a_kernel_layer_in_place(tmp_path):
    """The `kernels` backend's mechanism, offline: `kernelize` swaps the core's reference forward for the layer of
    a kernel repository (here a local one whose layer scales the reference by 2, so the swap is visible)."""
    from kernels import LocalLayerRepository

    package = tmp_path / "torch-universal" / "scaled_core"
    package.mkdir(parents=True)
    (tmp_path / "torch-universal" / "metadata.json").write_text(
        '{"id": "scaled-core", "name": "scaled-core", "version": 1, "license": "Apache-2.0", "python-depends": [], '
        '"backend": {"type": "cpu"}}'
    )
    (package / "__init__.py").write_text("from . import layers\n")
    (package / "layers.py").write_text(
        "from torch import nn\n"
        "from genvis_hf.modeling.deformable_attention import multi_scale_deformable_attention_torch as core\n"
        "class MultiScaleDeformableAttention(nn.Module):\n"
        "    has_backward = True\n"
        "    def forward(self, value, shapes, shapes_list, starts, locations, weights, im2col_step=64):\n"
        "        return 2 * core(value, shapes_list, locations, weights)\n"
    )
    repository = LocalLayerRepository(tmp_path, layer_name=backends.KERNEL_LAYER_NAME, check_arch=False)
    core = backends.kernelize_core(repository, torch.device("cpu"))
    inputs = make_inputs(*CASES["three_odd_levels"])
    torch.testing.assert_close(core(*inputs, 64), 2 * _run("torch", inputs))


def test_im2col_step_divides_the_batch():
    assert [im2col_step_for(b) for b in (1, 3, 64, 96, 130)] == [1, 3, 64, 48, 26]
