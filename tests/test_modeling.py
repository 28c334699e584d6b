"""GenVISModel behaviour beyond the fixtures: clip lengths, partial clips, batching, continuation,
Swin, save/load round trip and Auto classes."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config_kwargs
from transformers import AutoModel, AutoVideoProcessor

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
    return torch.randint(
        0, 256, (frames, 3, height, width), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


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


def test_unknown_forward_arguments_are_a_type_error_naming_them():
    model = tiny_model()
    pixel_values = torch.randn(1, 1, 3, 64, 64)
    with pytest.raises(TypeError, match=r"'output_attentions', 'foo'.*no attention weights"):
        model(pixel_values, output_attentions=True, foo=1)
    head = GenVISForVideoInstanceSegmentation(model.config)
    with pytest.raises(TypeError, match=r"GenVISForVideoInstanceSegmentation.forward\(\).*'num_items_in_batch'"):
        head(pixel_values, num_items_in_batch=3)
    assert head.accepts_loss_kwargs is False  # Trainer passes no loss kwargs to it
