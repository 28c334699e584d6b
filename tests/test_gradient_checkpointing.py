"""Gradient checkpointing through transformers' standard API: the same loss and the same gradient on every trainable
parameter as without it, with every backbone block, deformable encoder layer and frame/object decoder layer
recomputed in the backward pass."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import tiny_config_kwargs
from transformers.modeling_layers import GradientCheckpointingLayer

from genvis_hf import GenVISConfig, GenVISForVideoInstanceSegmentation

# stochastic depth on: the recomputation must replay its random draws
SWIN = {
    "backbone_type": "swin",
    "swin_embed_dim": 32,
    "swin_depths": [2, 2, 2, 2],
    "swin_num_heads": [1, 2, 4, 8],
    "swin_window_size": 4,
    "swin_drop_path_rate": 0.2,
}
CHECKPOINTED = ("SwinBlock", "BottleneckBlock", "DeformableEncoderLayer", "FrameDecoderLayer", "ObjectEncoderLayer",
                "ObjectDecoderLayer")  # fmt: skip


def _labels(num_frames=3, size=64):
    masks = torch.zeros(2, num_frames, size, size, dtype=torch.bool)
    masks[0, :, 4:20, 4:24] = True
    masks[1, 1:, 30:50, 28:60] = True
    return [{"class_labels": torch.tensor([1, 2]), "masks": masks}]


def _loss_and_gradients(model, pixel_values):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # point sampling and stochastic depth draw from torch's RNG
    loss = model(pixel_values=pixel_values, labels=_labels()).loss
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def _count_layer_runs(model) -> dict[str, int]:
    """Runs of each checkpointed layer's body, counted on its first child module: a hook on the layer itself fires
    once (the checkpoint wraps `forward`, not `__call__`), one inside it fires again when the backward recomputes it."""
    counts: dict[str, int] = {}
    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer):
            kind = type(module).__name__
            child = next(module.children())
            child.register_forward_hook(lambda *_, kind=kind: counts.__setitem__(kind, counts.get(kind, 0) + 1))
    return counts


@pytest.mark.parametrize("backbone", ["resnet", "swin"])
def test_checkpointed_gradients_equal_the_plain_ones_on_every_trainable_parameter(backbone):
    config = GenVISConfig(**tiny_config_kwargs(train_num_points=128, freeze_detector=False, clip_length=1,
                                               **(SWIN if backbone == "swin" else {})))  # fmt: skip
    torch.manual_seed(0)
    plain = GenVISForVideoInstanceSegmentation(config).train()
    checkpointed = GenVISForVideoInstanceSegmentation(config).train()
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.supports_gradient_checkpointing and not checkpointed.is_activation_checkpointing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5.x: renamed activation_checkpointing_enable
        checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert checkpointed.is_activation_checkpointing
    layer_kinds = {type(m).__name__ for m in checkpointed.modules() if isinstance(m, GradientCheckpointingLayer)}
    assert layer_kinds == {name for name in CHECKPOINTED if backbone == "swin" or name != "SwinBlock"} - (
        {"BottleneckBlock"} if backbone == "swin" else set()
    )

    pixel_values = torch.randn(1, 3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    plain_runs, checkpointed_runs = _count_layer_runs(plain), _count_layer_runs(checkpointed)
    plain_loss, plain_grads = _loss_and_gradients(plain, pixel_values)
    loss, grads = _loss_and_gradients(checkpointed, pixel_values)

    assert set(plain_runs) == layer_kinds
    # every kind of layer ran its body twice per call: the forward, then the recomputation in the backward
    assert checkpointed_runs == {kind: 2 * runs for kind, runs in plain_runs.items()}
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=1e-6)
    assert set(grads) == {n for n, _ in checkpointed.named_parameters()}  # every parameter trains here
    for name, grad in grads.items():
        assert grad is not None and plain_grads[name] is not None, name
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_checkpointing_is_off_at_inference_and_can_be_disabled():
    model = GenVISForVideoInstanceSegmentation(GenVISConfig(**tiny_config_kwargs()))
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    counts = _count_layer_runs(model)
    with torch.no_grad():
        model.eval()(pixel_values=torch.randn(1, 2, 3, 64, 64))
    single = dict(counts)
    model.activation_checkpointing_disable()
    assert not model.is_activation_checkpointing
    counts.clear()
    with torch.no_grad():
        model(pixel_values=torch.randn(1, 2, 3, 64, 64))
    assert counts == single
