"""GenVISModel behaviour beyond the fixtures: clip lengths, partial clips, batching, continuation,
Swin, save/load round trip and Auto classes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoVideoProcessor

from conftest import tiny_config_kwargs
from genvis_hf import (
    AutoModelForVideoInstanceSegmentation,
    GenVISConfig,
    GenVISForVideoInstanceSegmentation,
    GenVISModel,
    GenVISVideoProcessor,
)


def tiny_model(**overrides) -> GenVISModel:
    return GenVISModel(GenVISConfig(**tiny_config_kwargs(**overrides))).eval()


def _video(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (frames, 3, height, width), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _run(model, processor, videos, **kwargs):
    inputs = processor(videos=videos, do_resize=False, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs, **kwargs)


@pytest.mark.parametrize("clip_length, frames, expected", [(1, 3, [1, 1, 1]), (2, 5, [2, 2, 1]), (3, 4, [3, 1]),
                                                           (4, 2, [2])])  # fmt: skip
def test_any_clip_length_and_a_short_last_clip(clip_length, frames, expected):
    model = tiny_model(clip_length=clip_length)
    outputs = _run(model, GenVISVideoProcessor(), [_video(frames, 64, 96)])
    assert outputs.clip_lengths[0].tolist() == expected
    assert outputs.class_queries_logits.shape == (1, len(expected), 10, 8)
    assert outputs.mask_features.shape == (1, frames, 64, 16, 24)


def test_continuing_with_clip_memory_equals_one_call():
    model = tiny_model(clip_length=2)
    processor = GenVISVideoProcessor()
    video = _video(5, 64, 64)
    whole = _run(model, processor, [video])
    first = _run(model, processor, [video[:4]])
    rest = _run(model, processor, [video[4:]], clip_memory=first.clip_memory)
    torch.testing.assert_close(torch.cat([first.class_queries_logits, rest.class_queries_logits], 1),
                               whole.class_queries_logits, atol=1e-5, rtol=0)  # fmt: skip
    torch.testing.assert_close(rest.memory_keys[0, 0], whole.memory_keys[0, 2], atol=1e-5, rtol=0)


def test_each_video_of_a_batch_equals_running_it_alone():
    model = tiny_model(clip_length=2)
    processor = GenVISVideoProcessor()
    videos = [_video(5, 70, 100, seed=1), _video(3, 64, 64, seed=2), _video(5, 70, 100, seed=3)]
    batched = _run(model, processor, videos)
    assert batched.video_lengths.tolist() == [5, 3, 5]
    assert batched.image_sizes.tolist() == [[70, 100], [64, 64], [70, 100]]
    assert batched.padded_image_sizes.tolist() == [[96, 128], [64, 64], [96, 128]]
    batched_results = processor.post_process_video_instance_segmentation(batched, top_k=5)
    for index, video in enumerate(videos):
        alone = _run(model, processor, [video])
        clips, frames = int(alone.num_clips[0]), int(alone.video_lengths[0])
        torch.testing.assert_close(batched.class_queries_logits[index, :clips], alone.class_queries_logits[0],
                                   atol=1e-5, rtol=0)  # fmt: skip
        h4, w4 = alone.mask_features.shape[-2:]
        torch.testing.assert_close(batched.mask_features[index, :frames, :, :h4, :w4], alone.mask_features[0],
                                   atol=1e-5, rtol=0)  # fmt: skip
        result = processor.post_process_video_instance_segmentation(alone, top_k=5)[0]
        assert batched_results[index]["labels"].tolist() == result["labels"].tolist()
        torch.testing.assert_close(batched_results[index]["scores"], result["scores"], atol=1e-5, rtol=0)
        assert batched_results[index]["masks"].shape == (5, frames, *video.shape[-2:])
        assert (batched_results[index]["masks"] != result["masks"]).float().mean() < 1e-3


def test_swin_backbone_handles_sizes_that_are_not_window_multiples():
    model = tiny_model(backbone_type="swin", swin_embed_dim=32, swin_depths=[2, 2, 2, 2], swin_num_heads=[1, 2, 4, 8],
                       swin_window_size=7, clip_length=3)  # fmt: skip
    outputs = _run(model, GenVISVideoProcessor(), [_video(3, 100, 150)], output_hidden_states=True)
    channels = [h.shape[2] for h in outputs.backbone_hidden_states]
    sizes = [tuple(h.shape[-2:]) for h in outputs.backbone_hidden_states]
    assert channels == [32, 64, 128, 256]
    assert sizes == [(32, 40), (16, 20), (8, 10), (4, 5)]
    assert torch.isfinite(outputs.class_queries_logits).all()


def test_window_attention_in_the_object_encoder_runs_on_partial_windows():
    model = tiny_model(object_encoder_window_size=2, object_encoder_layers=3, clip_length=3)
    outputs = _run(model, GenVISVideoProcessor(), [_video(4, 64, 64)])
    assert outputs.clip_lengths[0].tolist() == [3, 1]
    assert torch.isfinite(outputs.class_queries_logits).all()


@pytest.mark.parametrize("backbone", ["resnet", "swin"])
def test_save_and_load_round_trip_gives_identical_outputs(tmp_path, backbone):
    extra = dict(backbone_type="swin", swin_embed_dim=32, swin_depths=[2, 2, 2, 2], swin_num_heads=[1, 2, 4, 8]) \
        if backbone == "swin" else {}  # fmt: skip
    model = GenVISForVideoInstanceSegmentation(GenVISConfig(**tiny_config_kwargs(**extra))).eval()
    processor = GenVISVideoProcessor.from_model_config(model.config)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()

    for loader in (AutoModelForVideoInstanceSegmentation, GenVISForVideoInstanceSegmentation):
        reloaded = loader.from_pretrained(tmp_path).eval()
        assert isinstance(reloaded, GenVISForVideoInstanceSegmentation)
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, reloaded.state_dict()[name]), name
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(base, GenVISModel)
    loaded_processor = AutoVideoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded_processor, GenVISVideoProcessor)
    assert loaded_processor.to_dict() == processor.to_dict()

    video = _video(3, 64, 96)
    expected = _run(model, processor, [video])
    for other in (reloaded, base):
        actual = _run(other, loaded_processor, [video])
        assert torch.equal(actual.class_queries_logits, expected.class_queries_logits)
        assert torch.equal(actual.mask_features, expected.mask_features)


def test_bad_pixel_values_shape_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"\[batch, frames, 3, height, width\]"):
        model(torch.zeros(1, 2, 4, 32, 32))
    with pytest.raises(ValueError, match="pixel_mask has shape"):
        model(torch.zeros(1, 2, 3, 32, 32), pixel_mask=torch.ones(1, 2, 16, 16))


@pytest.mark.parametrize("conv_route", [True, False])
@pytest.mark.parametrize("shape", [(1, 3570, 256, 1024), (2, 100, 256, 2048), (1, 30, 64, 64)])
def test_linear_routes_equal_f_linear(monkeypatch, conv_route, shape):
    """`layers.linear` takes the 1x1-convolution route on AMD CPUs and `F.linear` on Intel ones: both must give
    F.linear's values (to float rounding) and gradients, whichever this machine picks."""
    from genvis_hf.modeling import layers

    monkeypatch.setattr(layers, "_conv_linear_pays", lambda: conv_route)
    batch, rows, c_in, c_out = shape
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, rows, c_in, generator=generator, requires_grad=True)
    weight = torch.randn(c_out, c_in, generator=generator, requires_grad=True)
    bias = torch.randn(c_out, generator=generator, requires_grad=True)
    out = layers.linear(x, weight, bias)
    expected = torch.nn.functional.linear(x, weight, bias)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)
    grads = torch.autograd.grad(out.square().sum(), (x, weight, bias))
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, weight, bias))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("post_op", ["relu", "residual"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("shape", [(1, 3570, 256, 1024), (2, 100, 256, 2048)])
def test_linear_post_ops_equal_the_separate_ops(monkeypatch, post_op, fused, shape):
    """`linear(..., relu=True)` and `linear(..., residual=r)` at inference (oneDNN post-ops when available and the
    product is large) equal F.linear followed by the ReLU / the add; with autograd on they stay differentiable."""
    from genvis_hf.modeling import layers

    monkeypatch.setattr(layers, "onednn_fused_conv_available", lambda: fused)
    batch, rows, c_in, c_out = shape
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, rows, c_in, generator=generator)
    weight = torch.randn(c_out, c_in, generator=generator) * 0.1
    bias = torch.randn(c_out, generator=generator)
    residual = torch.randn(batch, rows, c_out, generator=generator)
    kwargs = {"relu": True} if post_op == "relu" else {"residual": residual}
    expected = torch.nn.functional.linear(x, weight, bias)
    expected = expected.relu() if post_op == "relu" else residual + expected
    with torch.no_grad():
        torch.testing.assert_close(layers.linear(x, weight, bias, **kwargs), expected, rtol=1e-5, atol=1e-4)
    x.requires_grad_(True)
    out = layers.linear(x, weight, bias, **kwargs)
    assert out.requires_grad
    torch.testing.assert_close(out.detach(), expected, rtol=1e-5, atol=1e-4)


def test_conv_linear_override(monkeypatch):
    from genvis_hf.modeling import layers

    for value, expected in (("0", False), ("1", True)):
        layers._conv_linear_pays.cache_clear()
        monkeypatch.setenv("GENVIS_HF_CONV_LINEAR", value)
        assert layers._conv_linear_pays() is expected
    layers._conv_linear_pays.cache_clear()
    monkeypatch.delenv("GENVIS_HF_CONV_LINEAR")
    from genvis_hf.utils.cpu import cpu_vendor

    assert layers._conv_linear_pays() is (cpu_vendor() != "GenuineIntel")
    layers._conv_linear_pays.cache_clear()


def _backbone_with_random_statistics(depth: int):
    from genvis_hf.modeling.backbone_resnet import GenVISResNetBackbone

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
def test_fused_inference_backbone_equals_the_unfused_graph(depth):
    from genvis_hf.modeling import backbone_resnet

    assert backbone_resnet.onednn_fused_conv_available(), "this torch build has no oneDNN fused convolution"
    backbone = _backbone_with_random_statistics(depth)
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        fused = backbone(images)
    reference = [x.detach() for x in backbone(images)]  # autograd on: conv, BN, add and ReLU as separate ops
    for actual, expected in zip(fused, reference):
        assert actual.is_contiguous(memory_format=torch.channels_last)  # the fused path ran
        assert not expected.is_contiguous(memory_format=torch.channels_last)
        _assert_close_to_scale(actual, expected)


def test_fused_backbone_refolds_after_weights_or_statistics_change():
    backbone = _backbone_with_random_statistics(18)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = backbone(images)[-1]
        backbone.stages[3][1].conv2.norm.running_mean.add_(1.0)  # an in-place change of a statistic
        after_statistic = backbone(images)[-1]
        backbone.stem.conv1.conv.weight.mul_(0.5)  # ... and of a weight
        after_weight = backbone(images)[-1]
    assert not torch.allclose(before, after_statistic) and not torch.allclose(after_statistic, after_weight)
    _assert_close_to_scale(after_weight, backbone(images)[-1].detach())



@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_genvis_mask_features_equal_the_projection_convolution_in_the_contiguous_layout(memory_format):
    decoder = tiny_model().object_decoder
    stride4 = torch.randn(3, 64, 10, 14).contiguous(memory_format=memory_format)
    projected = decoder.project_mask_features(stride4)
    assert projected.is_contiguous()  # what the video concatenation and the post-processing product want
    torch.testing.assert_close(projected, decoder.mask_projection(stride4), rtol=0, atol=1e-5)


def test_level_mask_features_equal_the_resized_full_resolution_mask_features():
    import torch.nn.functional as F

    pixel_decoder = tiny_model().pixel_decoder
    torch.nn.init.normal_(pixel_decoder.mask_projection.bias)
    stride4 = torch.randn(2, 64, 24, 30).contiguous(memory_format=torch.channels_last)
    sizes = [(3, 4), (6, 8), (12, 15)]
    with torch.no_grad():
        full = pixel_decoder.mask_projection(stride4)
        expected = [F.interpolate(full, size=s, mode="bilinear", align_corners=False) for s in sizes]
        actual = pixel_decoder.level_mask_features(stride4, sizes)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-5)


def test_frame_decoder_without_mask_features_says_what_it_needs():
    decoder = tiny_model().frame_decoder
    levels = [torch.randn(1, 64, s, s) for s in (2, 4, 8)]
    with pytest.raises(ValueError, match="needs mask_features"):
        decoder(levels, None, output_predictions=True)


def test_inference_runs_the_per_frame_stages_on_whole_clips_of_at_least_four_frames():
    def backbone_batches(clip_length: int, grad: bool, videos: int = 1) -> list[int]:
        model = tiny_model(clip_length=clip_length)
        sizes, frame_decoder_sizes = [], []
        model.backbone.register_forward_hook(lambda module, args, output: sizes.append(args[0].shape[0]))
        model.frame_decoder.register_forward_hook(
            lambda module, args, output: frame_decoder_sizes.append(args[0][0].shape[0])
        )
        inputs = GenVISVideoProcessor()(videos=[_video(7, 64, 64, seed=s) for s in range(videos)], do_resize=False,
                                        return_tensors="pt")  # fmt: skip
        with torch.set_grad_enabled(grad):
            model(**inputs)
        assert frame_decoder_sizes == sizes  # the frame decoder runs on the same batches as the backbone
        return sizes

    assert backbone_batches(1, grad=False) == [4, 3]
    assert backbone_batches(2, grad=False) == [4, 3]
    assert backbone_batches(3, grad=False) == [6, 1]  # the fewest whole clips of 3 that make >= 4 frames
    assert backbone_batches(1, grad=False, videos=2) == [8, 6]  # a group of 2 videos: 4 (then 3) frames each
    assert backbone_batches(1, grad=True) == [1] * 7  # training keeps one clip per call


@pytest.mark.parametrize("clip_length", [1, 2])
def test_chunked_per_frame_stages_equal_clip_by_clip_inference(clip_length):
    """Each clip's frames are picked out of the chunk's per-frame outputs correctly (several videos included):
    the same outputs as running those stages per clip, up to the products' batch-size rounding."""
    model = tiny_model(clip_length=clip_length)
    processor = GenVISVideoProcessor()
    videos = [_video(7, 64, 96, seed=1), _video(7, 64, 96, seed=2)]
    chunked = _run(model, processor, videos)
    model.frames_per_call = 1
    per_clip = _run(model, processor, videos)
    for key in ("class_queries_logits", "mask_embeddings", "mask_features", "frame_queries"):
        torch.testing.assert_close(getattr(chunked, key), getattr(per_clip, key), rtol=0, atol=1e-5, msg=key)


@pytest.mark.parametrize("clip_length, videos, expected", [(1, 1, [4, 3]), (3, 1, [2, 1]), (1, 2, [8, 6])])
def test_inference_encodes_the_whole_clips_of_a_chunk_in_one_batch(monkeypatch, clip_length, videos, expected):
    """The object encoder runs once per chunk on all its whole clips (clip-major batch of G videos); a shorter
    last clip (7 frames in clips of 3) is encoded by itself in the clip's own call."""
    model = tiny_model(clip_length=clip_length)
    batches = []
    encode = model.object_decoder.encode_clips
    monkeypatch.setattr(model.object_decoder, "encode_clips", lambda x: batches.append(x.shape[0]) or encode(x))
    _run(model, GenVISVideoProcessor(), [_video(7, 64, 96, seed=s) for s in range(videos)])
    assert batches == expected


def test_concatenate_frames_is_a_view_of_adjacent_frames_and_a_copy_otherwise():
    from genvis_hf.modeling.modeling_genvis import concatenate_frames

    video = torch.randn(9, 3, 4, 5)
    joined = concatenate_frames([video[0:4], video[4:5], video[5:9]])
    assert joined.data_ptr() == video.data_ptr() and joined.is_contiguous() and torch.equal(joined, video)
    gap = concatenate_frames([video[0:4], video[5:9]])  # not adjacent: a copy with the right content
    assert gap.data_ptr() != video.data_ptr() and torch.equal(gap, torch.cat([video[0:4], video[5:9]]))
    apart = [torch.randn(2, 3), torch.randn(1, 3)]
    assert torch.equal(concatenate_frames(apart), torch.cat(apart))


@pytest.mark.parametrize("clip_length", [1, 3])
def test_one_video_inference_writes_mask_features_into_one_video_tensor(monkeypatch, clip_length):
    """Inference on one video writes each frame's GenVIS mask features into its slice of the output tensor
    (no concatenation copy of ~12 MB a frame); the values are those of the per-clip path."""
    model = tiny_model(clip_length=clip_length)
    processor = GenVISVideoProcessor()
    targets = []
    project = model.object_decoder.project_mask_features

    def spy(stride4_features, out=None):
        targets.append(out)
        return project(stride4_features, out)

    monkeypatch.setattr(model.object_decoder, "project_mask_features", spy)
    outputs = _run(model, processor, [_video(7, 64, 96, seed=4)])
    assert len(targets) == 7 and all(t is not None for t in targets)
    assert outputs.mask_features[0].data_ptr() == targets[0].data_ptr()
    model.frames_per_call = 1  # clip by clip: the concatenating path
    reference = _run(model, processor, [_video(7, 64, 96, seed=4)])
    torch.testing.assert_close(outputs.mask_features, reference.mask_features, rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo's notes on the graph breaks it expects
def test_compile_for_inference_gives_the_eager_outputs():
    """The opt-in `torch.compile` path: dynamo captures the per-frame stages (graph breaks at the compiled CPU ops
    included) and the clip loop with its growing memory, and the outputs equal the eager model's. The `eager`
    backend checks the capture without inductor's minutes of code generation (inductor's numerics are torch's;
    scripts/benchmark.py --compile measures the inductor path)."""
    torch._dynamo.reset()
    model = tiny_model(clip_length=1)
    processor = GenVISVideoProcessor()
    video = [_video(5, 64, 96, seed=5)]
    eager = _run(model, processor, video)
    model.compile_for_inference(backend="eager")
    try:
        compiled = _run(model, processor, video)
    finally:
        torch._dynamo.reset()
    for key in ("class_queries_logits", "mask_embeddings", "mask_features", "propagated_queries", "memory_keys"):
        torch.testing.assert_close(getattr(compiled, key), getattr(eager, key), rtol=0, atol=1e-6, msg=key)
    assert all(getattr(model, name)._compiled_call_impl is not None
               for name in ("backbone", "pixel_decoder", "frame_decoder", "object_decoder"))  # fmt: skip


def test_unknown_forward_arguments_are_a_type_error_naming_them():
    model = tiny_model()
    pixel_values = torch.randn(1, 1, 3, 64, 64)
    with pytest.raises(TypeError, match=r"'output_attentions', 'foo'.*no attention weights"):
        model(pixel_values, output_attentions=True, foo=1)
    head = GenVISForVideoInstanceSegmentation(model.config)
    with pytest.raises(TypeError, match=r"GenVISForVideoInstanceSegmentation.forward\(\).*'num_items_in_batch'"):
        head(pixel_values, num_items_in_batch=3)
    assert head.accepts_loss_kwargs is False  # Trainer passes no loss kwargs to it
