"""The CPU inference fast path (`genvis_hf.optimization`): applied by `eval()`, undone by `train()`, switched off by
the settings; every fast module equal to the reference module it stands in for; the chunked clip loop; and
torch.compile / torch.export of the stages."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config_kwargs
from deformable_attention_helpers import require_backend

from genvis_hf import GenVISConfig, GenVISForVideoInstanceSegmentation, GenVISModel, GenVISVideoProcessor
from genvis_hf.modeling.backbone_resnet import ConvFrozenBN, GenVISResNetBackbone
from genvis_hf.modeling.layers import ConvNormActivation, GenVISAttention
from genvis_hf.ops import masked_attention as masked_attention_op
from genvis_hf.ops import winograd as winograd_op
from genvis_hf.optimization import (
    clip_loop,
    is_optimized,
    layers,
    optimize_for_inference,
    pixel_decoder,
    resnet,
    restore_reference,
)
from genvis_hf.optimization.compile import export_stages
from genvis_hf.optimization.layers import fast_linear
from genvis_hf.settings import settings_override

SWIN = dict(backbone_type="swin", swin_embed_dim=32, swin_depths=[2, 2, 2, 2], swin_num_heads=[1, 2, 4, 8])


def tiny_model(**overrides) -> GenVISModel:
    return GenVISModel(GenVISConfig(**tiny_config_kwargs(**overrides))).eval()


def _video(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (frames, 3, height, width), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def _run(model, videos, **kwargs):
    inputs = GenVISVideoProcessor()(videos=videos, do_resize=False, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs, **kwargs)


def _assert_outputs_close(actual, expected, atol=1e-5, keys=("class_queries_logits", "mask_embeddings", "mask_features",
                                                             "frame_queries", "propagated_queries", "memory_keys")):  # fmt: skip
    for key in keys:
        torch.testing.assert_close(getattr(actual, key), getattr(expected, key), rtol=0, atol=atol, msg=key)


# ---------------------------------------------------------------------------------------------- the step itself
def test_eval_applies_the_fast_path_and_train_restores_the_reference():
    model = GenVISForVideoInstanceSegmentation(GenVISConfig(**tiny_config_kwargs()))
    tensors = dict(model.state_dict(keep_vars=True))
    assert not is_optimized(model)
    model.eval()
    assert is_optimized(model)
    assert (
        type(model.model.pixel_decoder.encoder_layers[0].self_attn) is pixel_decoder.FusedMultiScaleDeformableAttention
    )
    assert type(model.model.frame_decoder.class_predictor) is layers.OneDNNLinear
    assert "forward_video_group" in model.model.__dict__
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(tensors) and all(after[k] is tensors[k] for k in tensors)  # the very same tensors
    model.train()
    assert not is_optimized(model) and "forward_video_group" not in model.model.__dict__
    assert type(model.model.frame_decoder.class_predictor) is torch.nn.Linear
    assert not hasattr(model.model.pixel_decoder.output_convs[0], "_winograd_weight")  # caches gone with the swap


def test_the_settings_switch_gives_the_reference_model():
    with settings_override(optimize_on_eval=False):
        model = tiny_model()
    assert not is_optimized(model)
    model.optimize_for_inference()
    assert is_optimized(model)
    model.restore_reference()
    assert not is_optimized(model)


def test_from_pretrained_returns_the_optimised_model(tmp_path):
    GenVISForVideoInstanceSegmentation(GenVISConfig(**tiny_config_kwargs())).save_pretrained(tmp_path)
    assert is_optimized(GenVISForVideoInstanceSegmentation.from_pretrained(tmp_path))
    with settings_override(optimize_on_eval=False):
        assert not is_optimized(GenVISForVideoInstanceSegmentation.from_pretrained(tmp_path))


@pytest.mark.parametrize("overrides", [{}, {"clip_length": 3}, SWIN])
def test_optimised_model_equals_the_reference_model(overrides):
    require_backend("jit", "cpu")
    model = tiny_model(**overrides)
    model.set_deformable_attention_backend("jit")
    videos = [_video(7, 64, 96, seed=1), _video(7, 64, 96, seed=2)]
    optimised = _run(model, videos)
    restore_reference(model)
    reference = _run(model, videos)
    _assert_outputs_close(optimised, reference, atol=2e-5)


def test_autograd_runs_the_reference_computation_in_eval_mode():
    """Gradients in eval mode (e.g. saliency): every fast module falls back to its differentiable reference."""
    model = tiny_model()
    pixel_values = torch.randn(1, 2, 3, 64, 64, requires_grad=True)
    model(pixel_values).class_queries_logits.sum().backward()
    assert pixel_values.grad is not None and torch.isfinite(pixel_values.grad).all()


# ---------------------------------------------------------------------------------------------- products
@pytest.mark.parametrize("route", ["onednn", "blas"])
@pytest.mark.parametrize("post_op", [None, "relu", "gelu", "residual"])
@pytest.mark.parametrize("shape", [(1, 3570, 256, 1024), (2, 100, 256, 2048), (1, 30, 64, 64)])
def test_fast_linear_equals_f_linear_on_both_routes(route, post_op, shape):
    batch, rows, c_in, c_out = shape
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, rows, c_in, generator=generator)
    weight = torch.randn(c_out, c_in, generator=generator) * 0.1
    bias = torch.randn(c_out, generator=generator)
    residual = torch.randn(batch, rows, c_out, generator=generator)
    kwargs = {"activation": post_op if post_op in ("relu", "gelu") else "none",
              "residual": residual if post_op == "residual" else None}  # fmt: skip
    expected = F.linear(x, weight, bias)
    if post_op == "residual":
        expected = expected + residual
    expected = {"relu": F.relu, "gelu": F.gelu}.get(post_op, lambda t: t)(expected)
    with settings_override(linear_route=route), torch.no_grad():
        torch.testing.assert_close(fast_linear(x, weight, bias, **kwargs), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("avx512", [True, False])
def test_choices_that_depend_on_the_instruction_set(monkeypatch, avx512):
    """Without AVX-512, oneDNN's 1x1 convolution is slow for long reductions and Winograd's batched GEMMs for few
    channels (measured on an AMD Zen 3, docs/performance.md): those products stay on MKL / oneDNN's direct
    convolution there. With AVX-512 both go to the fast operators."""
    require_backend("jit", "cpu")
    monkeypatch.setattr(layers, "cpu_has_avx512", lambda: avx512)
    onednn = _count_calls(monkeypatch, layers, "linear_pointwise")
    winograd = _count_calls(monkeypatch, layers, "winograd_conv3x3")
    with settings_override(linear_route="onednn"), torch.no_grad():
        x = torch.randn(600, 3072)
        expected = F.linear(x, torch.ones(8, 3072) * 0.01, None)
        torch.testing.assert_close(fast_linear(x, torch.ones(8, 3072) * 0.01), expected, rtol=1e-5, atol=1e-4)
        fast_linear(torch.randn(600, 1024), torch.randn(256, 1024))
        for channels in (64, 128):
            block = optimize_for_inference(ConvNormActivation(channels, 32, 3, activation=False).eval())
            block(torch.randn(1, channels, 12, 12))
    assert len(onednn) == (2 if avx512 else 1)  # the 1024-feature product takes oneDNN either way
    assert len(winograd) == (2 if avx512 else 1)  # 128 channels take Winograd either way


def test_onednn_linear_stays_differentiable():
    linear = optimize_for_inference(torch.nn.Linear(256, 512))
    assert type(linear) is layers.OneDNNLinear
    x = torch.randn(1, 400, 256, requires_grad=True)
    with settings_override(linear_route="onednn"):
        linear(x).square().sum().backward()
    assert x.grad is not None and linear.weight.grad is not None


# ---------------------------------------------------------------------------------------------- ResNet
def _backbone_with_random_statistics(depth: int) -> GenVISResNetBackbone:
    backbone = GenVISResNetBackbone(depth, stem_out_channels=16, res2_out_channels=32, width_per_group=8).eval()
    generator = torch.Generator().manual_seed(depth)
    for module in backbone.modules():
        if hasattr(module, "running_var"):
            module.weight.uniform_(0.5, 1.5, generator=generator)
            module.bias.normal_(generator=generator)
            module.running_mean.normal_(generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
    return backbone


def _assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor) -> None:
    tolerance = 1e-5 * max(1.0, expected.abs().max().item())
    assert (actual - expected).abs().max().item() <= tolerance


@pytest.mark.parametrize("depth", [18, 50])
def test_fused_backbone_equals_the_reference_backbone(depth):
    backbone = _backbone_with_random_statistics(depth)
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        reference = backbone(images)
        fused = optimize_for_inference(backbone)(images)
    for actual, expected in zip(fused, reference):
        assert actual.is_contiguous(memory_format=torch.channels_last)  # the fused path ran
        assert not expected.is_contiguous(memory_format=torch.channels_last)
        _assert_close_to_scale(actual, expected)


def test_fused_backbone_refolds_after_weights_or_statistics_change():
    backbone = optimize_for_inference(_backbone_with_random_statistics(18))
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = backbone(images)[-1]
        backbone.stages[3][1].conv2.norm.running_mean.add_(1.0)  # an in-place change of a statistic
        after_statistic = backbone(images)[-1]
        backbone.stem.conv1.conv.weight.mul_(0.5)  # ... and of a weight
        after_weight = backbone(images)[-1]
    assert not torch.allclose(before, after_statistic) and not torch.allclose(after_statistic, after_weight)
    _assert_close_to_scale(after_weight, backbone(images)[-1].detach())  # autograd on: the reference computation


def _count_calls(monkeypatch, module, name: str) -> list:
    calls = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_fused_resnet_conv_uses_winograd_for_stride_1_only(monkeypatch):
    require_backend("jit", "cpu")
    monkeypatch.setattr(layers, "cpu_has_avx512", lambda: True)  # the choice made at any channel count
    calls = _count_calls(monkeypatch, resnet, "winograd_conv3x3")
    x = torch.randn(2, 32, 15, 21)
    for stride in (1, 2):
        layer = ConvFrozenBN(32, 48, kernel_size=3, stride=stride).eval()
        with torch.no_grad():
            layer.norm.weight.uniform_(0.5, 1.5)
            layer.norm.bias.normal_()
            layer.norm.running_mean.normal_()
            layer.norm.running_var.uniform_(0.5, 2.0)
            reference = layer(x, relu=True)
            fast = optimize_for_inference(layer)(x, relu=True)
        assert len(calls) == 1
        assert fast.is_contiguous(memory_format=torch.channels_last)
        _assert_close_to_scale(fast, reference)


# ---------------------------------------------------------------------------------------------- Winograd conv + norm
def test_conv_norm_activation_runs_3x3_convs_by_winograd_at_inference_only(monkeypatch):
    require_backend("jit", "cpu")
    monkeypatch.setattr(layers, "cpu_has_avx512", lambda: True)
    calls = _count_calls(monkeypatch, layers, "winograd_conv3x3")
    block = ConvNormActivation(64, 64, 3, activation=True).eval()
    x = torch.randn(2, 64, 17, 23)
    with torch.no_grad():
        reference = block(x)
        fast = optimize_for_inference(block)(x)
        with settings_override(compiled_ops=False):
            assert torch.equal(block(x), reference)  # switched off: torch's convolution
    assert len(calls) == 1
    torch.testing.assert_close(fast, reference, atol=2e-5, rtol=0)
    block(x.requires_grad_()).sum().backward()  # autograd: torch's convolution, gradients flow to the weight
    assert len(calls) == 1 and block.conv.weight.grad is not None
    with torch.no_grad():
        optimize_for_inference(ConvNormActivation(64, 64, 1, activation=False).eval())(x)
    assert len(calls) == 1


def test_winograd_weights_follow_in_place_weight_changes(monkeypatch):
    require_backend("jit", "cpu")
    monkeypatch.setattr(layers, "cpu_has_avx512", lambda: True)
    block = optimize_for_inference(ConvNormActivation(32, 32, 3, activation=False).eval())
    x = torch.randn(1, 32, 9, 9)
    with torch.no_grad():
        before = block(x)
        block.conv.weight.mul_(-1.0)  # as an optimizer step or load_state_dict would
        after = block(x)
        with settings_override(compiled_ops=False):
            reference = block(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, reference, atol=2e-5, rtol=0)
    assert winograd_op.transform_weight is not None


# ---------------------------------------------------------------------------------------------- attention
def test_attention_uses_the_masked_attention_operator_for_boolean_masks_at_inference_only(monkeypatch):
    require_backend("jit", "cpu")
    calls = _count_calls(monkeypatch, layers, "masked_attention")
    attention = GenVISAttention(64, 8).eval()
    torch.nn.init.normal_(attention.in_proj_weight, std=0.2)
    query, memory = torch.randn(2, 10, 64), torch.randn(2, 50, 64)
    mask = torch.rand(2, 1, 10, 50) > 0.5
    mask[..., 0] = True
    with torch.no_grad():
        reference = attention(query, memory, memory, mask)
        optimize_for_inference(attention)
        fast = attention(query, memory, memory, mask)
        attention(query, memory, memory, None)  # no mask: SDPA
        attention(query, memory, memory, torch.zeros(2, 1, 10, 50))  # a float mask: SDPA
    assert len(calls) == 1
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-6)
    attention(query, memory, memory, mask).sum().backward()  # autograd: SDPA, gradients reach the weights
    assert len(calls) == 1 and attention.in_proj_weight.grad is not None
    assert masked_attention_op.reference is not None


@pytest.mark.parametrize("all_heads", [False, True])
def test_fast_frame_decoder_equals_the_reference_decoder(all_heads):
    require_backend("jit", "cpu")
    decoder = tiny_model().frame_decoder
    levels = [torch.randn(2, 64, s, s + 1) for s in (3, 6, 12)]
    mask_features = torch.randn(2, 64, 24, 26)
    with torch.no_grad():
        reference = decoder(levels, mask_features, output_all_heads=all_heads)
        optimize_for_inference(decoder)
        fast = decoder(levels, mask_features, output_all_heads=all_heads)
    assert fast.frame_queries.shape == reference.frame_queries.shape
    torch.testing.assert_close(fast.frame_queries, reference.frame_queries, rtol=0, atol=2e-5)


def test_level_mask_features_equal_the_resized_full_resolution_mask_features():
    decoder = tiny_model().pixel_decoder
    torch.nn.init.normal_(decoder.mask_projection.bias)
    stride4 = torch.randn(2, 64, 24, 30).contiguous(memory_format=torch.channels_last)
    sizes = [(3, 4), (6, 8), (12, 15)]
    with torch.no_grad():
        full = decoder.mask_projection(stride4)
        expected = [F.interpolate(full, size=s, mode="bilinear", align_corners=False) for s in sizes]
        actual = pixel_decoder.level_mask_features(decoder, stride4, sizes)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-5)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_genvis_mask_features_equal_the_projection_convolution_in_the_contiguous_layout(memory_format):
    decoder = tiny_model().object_decoder
    stride4 = torch.randn(3, 64, 10, 14).contiguous(memory_format=memory_format)
    with torch.no_grad():
        projected = clip_loop.project_mask_features(decoder, stride4)
        out = torch.empty(3, 64, 10, 14)
        written = clip_loop.project_mask_features(decoder, stride4, out)
    assert projected.is_contiguous()  # what the video concatenation and the post-processing product want
    assert written.data_ptr() == out.data_ptr()
    torch.testing.assert_close(projected, decoder.project_mask_features(stride4), rtol=0, atol=1e-5)
    torch.testing.assert_close(out, projected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- the clip loop
def test_inference_runs_the_per_frame_stages_on_whole_clips_of_at_least_four_frames():
    def backbone_batches(clip_length: int, grad: bool = False, videos: int = 1, frames_per_call: int = 4):
        model = tiny_model(clip_length=clip_length)
        sizes = []
        model.backbone.register_forward_hook(lambda module, args, output: sizes.append(args[0].shape[0]))
        inputs = GenVISVideoProcessor()(videos=[_video(7, 64, 64, seed=s) for s in range(videos)], do_resize=False,
                                        return_tensors="pt")  # fmt: skip
        with torch.set_grad_enabled(grad), settings_override(frames_per_call=frames_per_call):
            model(**inputs)
        return sizes

    assert backbone_batches(1) == [4, 3]
    assert backbone_batches(2) == [4, 3]
    assert backbone_batches(3) == [6, 1]  # the fewest whole clips of 3 that make >= 4 frames
    assert backbone_batches(1, videos=2) == [8, 6]  # a group of 2 videos: 4 (then 3) frames each
    assert backbone_batches(1, frames_per_call=2) == [2, 2, 2, 1]
    assert backbone_batches(1, grad=True) == [1] * 7  # autograd: the reference loop, one clip per call


@pytest.mark.parametrize("clip_length", [1, 2])
def test_chunked_loop_equals_the_reference_loop(clip_length):
    """Each clip's frames are picked out of the chunk's per-frame outputs correctly (several videos included)."""
    model = tiny_model(clip_length=clip_length)
    videos = [_video(7, 64, 96, seed=1), _video(7, 64, 96, seed=2)]
    chunked = _run(model, videos)
    with settings_override(frames_per_call=1):
        per_clip = _run(model, videos)
    _assert_outputs_close(chunked, per_clip)


@pytest.mark.parametrize("clip_length, videos, expected", [(1, 1, [4, 3]), (3, 1, [2, 1]), (1, 2, [8, 6])])
def test_inference_encodes_the_whole_clips_of_a_chunk_in_one_batch(monkeypatch, clip_length, videos, expected):
    """The object encoder runs once per chunk on all its whole clips (clip-major batch of G videos); a shorter
    last clip (7 frames in clips of 3) is encoded by itself."""
    model = tiny_model(clip_length=clip_length)
    batches = []
    encode = model.object_decoder.encode_clips
    monkeypatch.setattr(model.object_decoder, "encode_clips", lambda x: batches.append(x.shape[0]) or encode(x))
    _run(model, [_video(7, 64, 96, seed=s) for s in range(videos)])
    assert batches == expected


@pytest.mark.parametrize("clip_length", [1, 3])
def test_one_video_inference_writes_mask_features_into_one_video_tensor(monkeypatch, clip_length):
    """Inference on one video writes each frame's GenVIS mask features into its slice of the output tensor (no
    concatenation copy of ~12 MB a frame); the values are those of the reference loop."""
    model = tiny_model(clip_length=clip_length)
    targets = []
    project = clip_loop.project_mask_features
    monkeypatch.setattr(clip_loop, "project_mask_features",
                        lambda decoder, x, out=None: targets.append(out) or project(decoder, x, out))  # fmt: skip
    outputs = _run(model, [_video(7, 64, 96, seed=4)])
    assert len(targets) == 7 and all(t is not None for t in targets)
    assert outputs.mask_features[0].data_ptr() == targets[0].data_ptr()
    restore_reference(model)
    reference = _run(model, [_video(7, 64, 96, seed=4)])
    torch.testing.assert_close(outputs.mask_features, reference.mask_features, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------- compile / export
def test_compile_for_inference_captures_each_stage_in_one_graph_and_the_memory_read_stays_compiled():
    """`fullgraph=True` fails on any graph break; the `eager` backend checks the capture without inductor's
    minutes of code generation (inductor's numerics are torch's; scripts/benchmark.py --compile measures it). A
    12-clip video keeps the object decoder's memory read in at most three graphs (memory of 0, 1 and M >= 2
    clips), so it never reaches dynamo's recompile limit."""
    require_backend("jit", "cpu")
    torch._dynamo.reset()
    model = tiny_model(clip_length=1)
    model.set_deformable_attention_backend("jit")
    video = [_video(12, 64, 96, seed=5)]
    eager = _run(model, video)
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module.code.count("genvis"))
        return graph_module.forward

    model.compile_for_inference(fullgraph=True, backend=counting_backend)
    try:
        compiled = _run(model, video)
        again = _run(model, video)
    finally:
        torch._dynamo.reset()
    _assert_outputs_close(compiled, eager, atol=1e-6)
    _assert_outputs_close(again, eager, atol=1e-6)
    # backbone, pixel decoder (x2: the chunk's frames and the per-frame batch), frame decoder (x2), encoder (x2),
    # decode_queries (M = 0, 1, >= 2): bounded, whatever the video's length
    assert len(graphs) <= 10
    assert sum(graphs) > 0  # the registered operators are in the graphs, not graph breaks around them


def test_torch_export_of_the_per_frame_stages():
    require_backend("jit", "cpu")
    model = tiny_model()
    model.set_deformable_attention_backend("jit")
    images = torch.randn(2, 3, 64, 96)
    programs = export_stages(model, images)
    assert set(programs) == {"backbone", "pixel_decoder", "frame_decoder"}
    targets = {str(node.target) for program in programs.values() for node in program.graph.nodes}
    assert {"genvis.ms_deform_attn_from_projections.default", "genvis.masked_attention.default"} <= targets
    with torch.no_grad():
        features = [f.contiguous(memory_format=torch.channels_last) for f in model.backbone(images)]
        for actual, expected in zip(programs["backbone"].module()(images), model.backbone(images)):
            torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
        _levels, stride4 = programs["pixel_decoder"].module()(features)
        _expected_levels, expected_stride4 = model.pixel_decoder.forward_features(features)
        torch.testing.assert_close(stride4, expected_stride4, rtol=0, atol=1e-5)


def test_an_explicit_restore_survives_later_eval_calls():
    model = GenVISForVideoInstanceSegmentation(GenVISConfig(**tiny_config_kwargs())).eval()
    model.restore_reference()
    model.eval()  # e.g. inside segment_video or a pipeline
    assert not is_optimized(model)
    model.train().eval()
    assert not is_optimized(model)
    model.optimize_for_inference()
    model.train().eval()
    assert is_optimized(model)


# ---------------------------------------------------------------------------------------------- Swin
@pytest.mark.parametrize("size", [(64, 96), (100, 150), (28, 28)])  # padding on one side, both, none
def test_fast_swin_backbone_equals_the_reference_backbone(size):
    """Windows of 7 on maps that need padding (and one that does not), shifted and plain blocks, several images."""
    require_backend("jit", "cpu")
    from genvis_hf.modeling.backbone_swin import GenVISSwinBackbone
    from genvis_hf.optimization import swin

    backbone = GenVISSwinBackbone(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7).eval()
    for module in backbone.modules():
        if hasattr(module, "relative_position_bias_table"):
            torch.nn.init.normal_(module.relative_position_bias_table, std=0.5)
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        reference = backbone(images)
        optimize_for_inference(backbone)
        assert type(backbone.layers[0].blocks[1]) is swin.FastSwinBlock
        fast = backbone(images)
    for actual, expected in zip(fast, reference):
        torch.testing.assert_close(actual, expected, rtol=0, atol=2e-5 * max(1.0, expected.abs().max().item()))


@pytest.mark.parametrize("bf16_cpu", [True, False], ids=["cpu-with-bf16", "cpu-without-bf16"])
@pytest.mark.parametrize("overrides", [{}, SWIN], ids=["resnet", "swin"])
def test_bfloat16_fast_path_agrees_with_the_bfloat16_reference(overrides, bf16_cpu, monkeypatch):
    """bf16 models take the fast path too (oneDNN bf16 products; deformable sampling, masked and window attention in
    float32): their outputs agree with the bf16 reference modules' to bf16 precision."""
    from genvis_hf.optimization import conditions

    require_backend("jit", "cpu")
    if bf16_cpu and not conditions.onednn_bfloat16_ready():
        pytest.skip("this CPU has no bfloat16 instructions for oneDNN (the other case covers it)")
    # without them (an AVX2-only CPU), oneDNN's bf16 convolutions refuse to run: the fast modules keep torch's ops
    monkeypatch.setattr(conditions, "onednn_bfloat16_ready", lambda: bf16_cpu)
    model = tiny_model(**overrides).to(torch.bfloat16)
    model.set_deformable_attention_backend("jit")
    videos = [_video(5, 64, 96, seed=3)]
    optimised = _run(model, videos)
    restore_reference(model)
    reference = _run(model, videos)
    for key in ("class_queries_logits", "mask_embeddings", "mask_features"):
        actual, expected = getattr(optimised, key).float(), getattr(reference, key).float()
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        cosine = F.cosine_similarity(actual.flatten(), expected.flatten(), dim=0).item()
        assert cosine > 0.999, f"{key}: cosine similarity {cosine:.5f}"
