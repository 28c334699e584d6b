"""GenVISConfig: presets, validation, serialisation."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

import genvis_hf  # noqa: F401
from genvis_hf import GenVISConfig, GenVISVideoProcessor
from genvis_hf.configuration.presets import MODEL_ZOO, PRESETS


def test_twelve_presets_with_their_dataset_and_family():
    assert len(PRESETS) == 12
    for name in PRESETS:
        config = GenVISConfig.from_preset(name)
        entry = MODEL_ZOO[name]
        assert config.clip_length == (3 if name.endswith("-semi-online") else 1)
        processor = GenVISVideoProcessor.from_preset(name)
        assert processor.size["shortest_edge"] == (360 if entry.backbone == "r50" else 448)
        assert processor.size["longest_edge"] == 1333
        assert config.num_frame_queries == (100 if entry.backbone == "r50" else 200)
        assert config.backbone_type == ("resnet" if entry.backbone == "r50" else "swin")
        expected_classes = {"ytvis19": (40, "person", "tennis_racket"), "ytvis21": (40, "airplane", "zebra"),
                            "ovis": (25, "Person", "Vehical")}[entry.dataset]  # fmt: skip
        assert (config.num_labels, config.id2label[0], config.id2label[config.num_labels - 1]) == expected_classes
        assert processor.test_topk == (20 if entry.dataset == "ovis" else 10)
        assert not hasattr(config, "test_topk")  # one home for processing values: the processor


def test_preset_overrides_and_unknown_name():
    config = GenVISConfig.from_preset("genvis-swinl-ytvis19", clip_length=3)
    assert config.clip_length == 3 and config.swin_depths == [2, 2, 18, 2]
    with pytest.raises(KeyError, match="genvis-r50-ytvis19"):
        GenVISConfig.from_preset("genvis-r18-ytvis19")


def test_config_round_trip(tmp_path):
    config = GenVISConfig.from_preset("genvis-r50-ovis-semi-online", deformable_attention_backend="torch")
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, GenVISConfig)
    assert {k: v for k, v in loaded.to_dict().items() if k != "_name_or_path"} == {
        k: v for k, v in config.to_dict().items() if k != "_name_or_path"
    }
    assert loaded.id2label[24] == "Vehical"


@pytest.mark.parametrize(
    "kwargs, message",
    [({"backbone_type": "vgg"}, "backbone_type"), ({"clip_length": 0}, "clip_length"),
     ({"deformable_attention_backend": "cuda"}, "deformable_attention_backend"),
     ({"object_hidden_dim": 128}, "object_hidden_dim")],
)  # fmt: skip
def test_invalid_values_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GenVISConfig(**kwargs)
