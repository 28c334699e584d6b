"""Initialising GenVIS from transformers' Mask2Former: every key accounted for, and GenVIS's frame-level class and
mask logits equal Mask2Former's own on the same frames (tiny random Mask2Formers built from configs, no download)."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import (
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    ResNetConfig,
    SwinConfig,
)

from genvis_hf.conversion.mask2former import (
    DROPPED_MASK2FORMER_KEYS,
    Mask2FormerInitError,
    genvis_config_from_mask2former,
    init_from_mask2former,
)

STAGES = ["stage1", "stage2", "stage3", "stage4"]
SMALL_OBJECT_DECODER = {"object_encoder_layers": 1, "object_decoder_layers": 1, "num_clip_queries": 5,
                        "object_ffn_dim": 64, "deformable_attention_backend": "torch"}  # fmt: skip


def tiny_mask2former(backbone: str, num_labels: int = 5) -> Mask2FormerForUniversalSegmentation:
    if backbone == "swin":
        backbone_config = SwinConfig(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[2, 2, 4, 4], window_size=4,
                                     out_features=STAGES)  # fmt: skip
    else:  # transformers builds it (with a warning that no Hub checkpoint uses it); R-50 layout, narrow
        backbone_config = ResNetConfig(embedding_size=16, hidden_sizes=[32, 64, 128, 256], depths=[3, 4, 6, 3],
                                       layer_type="bottleneck", out_features=STAGES)  # fmt: skip
    config = Mask2FormerConfig(
        backbone_config=backbone_config, num_labels=num_labels, feature_size=32, mask_feature_size=32, hidden_dim=32,
        encoder_layers=2, decoder_layers=4, num_attention_heads=4, encoder_feedforward_dim=64, dim_feedforward=64,
        num_queries=10,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():  # statistics and norms away from their identity initialisation, so that they matter
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.2)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1 and ("norm" in name or "normalization" in name):
                parameter.add_(torch.randn_like(parameter) * 0.2)
    return model


@pytest.mark.parametrize("backbone", ["swin", "resnet"])
def test_frame_level_logits_equal_mask2formers_and_every_key_is_accounted_for(backbone):
    mask2former = tiny_mask2former(backbone)
    model, report = init_from_mask2former("tiny", mask2former=mask2former, **SMALL_OBJECT_DECODER)
    model.eval()

    # key accounting, both ways
    mask2former_keys = set(mask2former.state_dict())
    sources = [key for keys in report.mapped.values() for key in keys]
    assert len(sources) == len(set(sources))  # no Mask2Former tensor used twice
    assert set(sources) | set(report.dropped) == mask2former_keys and not set(sources) & set(report.dropped)
    for key in report.dropped:
        assert any(re.fullmatch(pattern, key) for pattern, _ in DROPPED_MASK2FORMER_KEYS), key
    genvis_keys = set(model.model.state_dict())
    assert set(report.mapped) | set(report.computed) | set(report.new) == genvis_keys and not report.reinitialised
    assert report.new and all(name.startswith("object_decoder.") for name in report.new)
    assert {name for name in genvis_keys if name.startswith("object_decoder.")} == set(report.new)
    assert all(name.endswith("attn.relative_position_index") for name in report.computed)
    assert bool(report.computed) == (backbone == "swin")
    assert ("model.pixel_level_module.encoder.swin.layernorm.weight" in report.dropped) == (backbone == "swin")
    assert "criterion.empty_weight" in report.dropped

    # the same frames through both: every prediction head's class and mask logits
    pixel_values = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = mask2former(pixel_values=pixel_values, output_auxiliary_logits=True)
        frames = model.model.forward_frames(pixel_values, output_loss_inputs=True)
    expected_classes = [head["class_queries_logits"] for head in expected.auxiliary_logits] + [
        expected.class_queries_logits
    ]
    expected_masks = [head["masks_queries_logits"] for head in expected.auxiliary_logits] + [
        expected.masks_queries_logits
    ]
    assert len(frames.class_logits) == len(expected_classes) == 4
    for actual, reference in zip(frames.class_logits + frames.mask_logits, expected_classes + expected_masks):
        assert actual.shape == reference.shape and reference.abs().max() > 0.05
        torch.testing.assert_close(actual, reference, atol=1e-4, rtol=0)


def test_another_label_set_reinitialises_only_the_frame_class_head(tmp_path):
    mask2former = tiny_mask2former("swin")
    mask2former.save_pretrained(tmp_path / "m2f")
    labels = {0: "circle", 1: "square", 2: "cross"}
    model, report = init_from_mask2former(tmp_path / "m2f", id2label=labels, label2id={v: k for k, v in labels.items()},
                                          **SMALL_OBJECT_DECODER)  # fmt: skip
    assert report.source == str(tmp_path / "m2f")
    assert report.reinitialised == ["frame_decoder.class_predictor.weight", "frame_decoder.class_predictor.bias"]
    assert model.config.num_labels == 3 and model.model.frame_decoder.class_predictor.out_features == 4
    state = mask2former.state_dict()
    torch.testing.assert_close(model.model.frame_decoder.query_features.weight,
                               state["model.transformer_module.queries_features.weight"], atol=0, rtol=0)  # fmt: skip
    qkv = model.model.backbone.layers[0].blocks[1].attn.qkv.weight
    prefix = "model.pixel_level_module.encoder.swin.encoder.layers.0.blocks.1.attention."
    assert torch.equal(qkv, torch.cat([state[prefix + f"{p}_proj.weight"] for p in "qkv"]))
    assert "another label set" in report.summary()
    assert not model.config.freeze_detector  # the object decoder is new and the class head may be too: train all

    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # the masks do not depend on the class head
        reference = mask2former(pixel_values=pixel_values).masks_queries_logits
        torch.testing.assert_close(model.eval().model.forward_frames(pixel_values, output_loss_inputs=True).mask_logits[-1],
                                   reference, atol=1e-4, rtol=0)  # fmt: skip


def test_unusable_checkpoints_fail_with_one_line(tmp_path):
    with pytest.raises(Mask2FormerInitError, match=r"cannot load Mask2Former .*nothing-here as a directory") as error:
        (tmp_path / "nothing-here").mkdir()
        init_from_mask2former(tmp_path / "nothing-here")
    assert "\n" not in str(error.value)
    config = tiny_mask2former("swin").config
    config.backbone_config.out_features = ["stage2", "stage3", "stage4"]
    with pytest.raises(Mask2FormerInitError, match="must return"):
        genvis_config_from_mask2former(config)
