"""The whole model gives the same outputs with every available deformable attention backend as with `torch`
(the backend the parity tests against the original GenVIS run with), and reports the backend it uses."""

from __future__ import annotations

import pytest
import torch
from deformable_attention_helpers import FAST_BACKEND_DEVICES, require_backend

from genvis_hf import GenVISConfig, GenVISModel
from genvis_hf.modeling import deformable_attention as dispatch
from genvis_hf.modeling.deformable_attention import (
    DeformableAttentionBackendUnavailable,
    MultiScaleDeformableAttention,
    resolve_backend,
)
from genvis_hf.optimization import pixel_decoder as fast_pixel_decoder

ATOL = 1e-4


def tiny_config(**overrides) -> GenVISConfig:
    kwargs = dict(
        resnet_width_per_group=8, resnet_stem_out_channels=16, resnet_res2_out_channels=32,
        pixel_decoder_dim=64, mask_dim=64, pixel_decoder_encoder_layers=2,
        frame_decoder_hidden_dim=64, frame_decoder_ffn_dim=128, frame_decoder_layers=3, num_frame_queries=20,
        object_hidden_dim=64, object_ffn_dim=128, object_encoder_layers=2, object_decoder_layers=2,
        num_clip_queries=10, num_labels=5,
    )  # fmt: skip
    kwargs.update(overrides)
    return GenVISConfig(**kwargs)


def build_model(device, clip_length: int) -> GenVISModel:
    """A random tiny GenVIS whose deformable layers sample off the pixel grid (trained-like offsets and
    non-uniform attention, not the initial regular pattern)."""
    torch.manual_seed(0)
    model = GenVISModel(tiny_config(clip_length=clip_length, deformable_attention_backend="torch")).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, MultiScaleDeformableAttention):
                module.sampling_offsets.weight.normal_(std=0.05)
                module.attention_weights.weight.normal_(std=0.05)
    return model.to(device)


def output_tensors(outputs) -> dict[str, torch.Tensor]:
    tensors = {}
    for key, value in outputs.items():
        if torch.is_tensor(value) and value.is_floating_point():
            tensors[key] = value
        elif isinstance(value, tuple):
            tensors.update({f"{key}[{i}]": t for i, t in enumerate(value) if torch.is_tensor(t)})
    return tensors


@pytest.mark.parametrize(("backend", "device"), FAST_BACKEND_DEVICES)
@pytest.mark.parametrize("clip_length", [1, 3], ids=["online", "semi_online"])
def test_model_outputs_match_torch_backend(backend, device, clip_length, monkeypatch):
    require_backend(backend, device)
    if device == "cuda":
        # TF32 convolutions round inputs to 10 mantissa bits: a 1e-7 change upstream can flip a rounding and move
        # an output by 1e-3, which says nothing about the backend. Compare in full float32.
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = build_model(device, clip_length)
    # 160 x 224: encoder maps 20x28, 10x14, 5x7 (odd sizes); 3 frames (semi-online: one clip of 3 -> batch 3)
    video = torch.randn(1, 3, 3, 160, 224, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        expected = output_tensors(model(video, output_hidden_states=True))

    calls, fused_calls = [], []
    original = dispatch._BACKENDS[backend]
    monkeypatch.setitem(
        dispatch._BACKENDS, backend,
        dispatch.DeformableAttentionBackend(backend, lambda *args: calls.append(1) or original.run(*args),
                                            original.unavailable_reason),
    )  # fmt: skip
    original_fused = fast_pixel_decoder.ms_deform_attn_from_projections
    monkeypatch.setattr(fast_pixel_decoder, "ms_deform_attn_from_projections",
                        lambda *args: fused_calls.append(1) or original_fused(*args))  # fmt: skip
    model.set_deformable_attention_backend(backend)
    assert model.deformable_attention_backend_in_use == backend
    with torch.no_grad():
        actual = output_tensors(model(video, output_hidden_states=True))
    # On CPUs the fast path runs the pixel decoder frame by frame (optimization/clip_loop.py); on GPUs it runs
    # the per-frame stages on chunks of >= 4 frames (here all 3).
    decoder_batches = 3 if device == "cpu" else 1
    runs = len(calls) + len(fused_calls)
    assert runs == 2 * decoder_batches, "every encoder layer of every frame batch must run the backend"
    # CPU inference with the jit kernels goes through the fast path's operator (softmax and locations inside)
    assert len(fused_calls) == (runs if (backend, device) == ("jit", "cpu") else 0)
    assert actual.keys() == expected.keys() and len(actual) > 10
    for key, tensor in expected.items():
        error = (actual[key] - tensor).abs().max().item()
        assert error <= ATOL, f"{backend}: {key} differs from the torch backend by {error:.3g}"


@pytest.mark.parametrize(("backend", "device"), FAST_BACKEND_DEVICES)
def test_training_gradients_at_the_models_own_inputs(backend, device, monkeypatch):
    """Training through the pixel decoder with `backend`: at the inputs the model really feeds each deformable
    layer (its value maps, offsets and attention weights) and the gradient the rest of the model sends back,
    the backend's gradients equal the torch backend's; and a full training step yields finite gradients for
    every parameter.

    (Comparing the parameters' gradients end to end is not a test of the backend: the decoder's ReLUs make
    them jump by ~1e-2 relative for any 1e-7 change of a deformable layer's output, the torch backend's own
    included.)"""
    require_backend(backend, device)
    model = build_model(device, 1).train()
    features = [torch.randn(2, c, 40 // 2**i, 56 // 2**i, generator=torch.Generator().manual_seed(i)).to(device)
                for i, c in enumerate(model.config.backbone_channels)]  # fmt: skip
    captured = []
    original = dispatch._BACKENDS[backend]

    def capturing_run(*args):
        output = original.run(*args)
        output.register_hook(lambda grad: captured.append((args, grad.detach().clone())))
        return output

    monkeypatch.setitem(dispatch._BACKENDS, backend,
                        dispatch.DeformableAttentionBackend(backend, capturing_run, original.unavailable_reason))  # fmt: skip
    model.pixel_decoder.set_deformable_attention_backend(backend)
    out = model.pixel_decoder(features)
    generator = torch.Generator().manual_seed(5)
    outputs = [*out.multi_scale_features, out.mask_features]
    sum((o * torch.randn(o.shape, generator=generator).to(device)).sum() for o in outputs).backward()
    parameters = dict(model.pixel_decoder.named_parameters())
    assert all(p.grad is not None and bool(p.grad.isfinite().all()) for p in parameters.values())
    assert len(captured) == len(model.pixel_decoder.encoder_layers)

    for (value, shapes, shapes_list, starts, locations, weights), grad_output in captured:
        results = {}
        for name in ("torch", backend):
            leaves = [t.detach().clone().requires_grad_(True) for t in (value, locations, weights)]
            result = original.run if name == backend else dispatch._BACKENDS["torch"].run
            output = result(leaves[0], shapes, shapes_list, starts, leaves[1], leaves[2])
            results[name] = (output, *torch.autograd.grad(output, leaves, grad_output))
        for label, actual, expected in zip(("output", "d value", "d locations", "d weights"), results[backend],
                                           results["torch"]):  # fmt: skip
            scale = max(1.0, expected.abs().max().item())
            error = (actual - expected).abs().max().item() / scale
            assert error <= 1e-5, f"{backend} {label}: relative error {error:.3g}"


def test_backend_in_use_reports_auto_choice_and_explicit_refusal():
    model = GenVISModel(tiny_config())
    assert model.config.deformable_attention_backend == "auto"
    assert model.deformable_attention_backend_in_use == resolve_backend("auto", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(DeformableAttentionBackendUnavailable, match="CUDA builds only"):
            model.set_deformable_attention_backend("kernels")
        assert model.config.deformable_attention_backend == "auto"  # unchanged after a refusal
