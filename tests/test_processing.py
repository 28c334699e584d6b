"""GenVISVideoProcessor pre-processing (normalise, pad, batch) and the resize rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genvis_hf import GenVISVideoProcessor
from genvis_hf.processing.video_processing_genvis import resized_shape


def test_normalise_pad_and_mask_match_the_original_arithmetic():
    processor = GenVISVideoProcessor()
    video = torch.randint(0, 256, (2, 3, 45, 70), dtype=torch.uint8)
    out = processor(videos=[video], do_resize=False, return_tensors="pt")
    assert out["pixel_values"].shape == (1, 2, 3, 64, 96) and out["pixel_values"].dtype == torch.float32
    mean = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    assert torch.equal(out["pixel_values"][0, :, :, :45, :70], (video.float() - mean) / std)
    assert out["pixel_values"][0, :, :, 45:].abs().sum() == 0 and out["pixel_values"][0, :, :, :, 70:].abs().sum() == 0
    assert out["pixel_mask"][0, :, :45, :70].all() and out["pixel_mask"].sum() == 2 * 45 * 70


@pytest.mark.parametrize("layout", ["THWC_numpy", "TCHW_tensor", "frame_list"])
def test_input_layouts_give_the_same_pixels(layout):
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    reference = GenVISVideoProcessor()(videos=[frames], do_resize=False, return_tensors="pt")["pixel_values"]
    video = {"THWC_numpy": frames, "TCHW_tensor": torch.from_numpy(frames).permute(0, 3, 1, 2),
             "frame_list": list(frames)}[layout]  # fmt: skip
    out = GenVISVideoProcessor()(videos=[video], do_resize=False, return_tensors="pt")["pixel_values"]
    assert torch.equal(out, reference)


def test_videos_of_different_sizes_and_lengths_are_batched_with_a_mask():
    videos = [torch.zeros(4, 3, 40, 50, dtype=torch.uint8), torch.zeros(2, 3, 70, 33, dtype=torch.uint8)]
    out = GenVISVideoProcessor()(videos=videos, do_resize=False, return_tensors="pt")
    assert out["pixel_values"].shape == (2, 4, 3, 96, 64)
    assert out["pixel_mask"][1, 2:].sum() == 0 and out["pixel_mask"][1, :2].sum() == 2 * 70 * 33


@pytest.mark.parametrize(
    "size, expected",
    [((720, 1280), (360, 640)), ((480, 640), (360, 480)), ((1080, 1920), (360, 640)), ((360, 2000), (240, 1333)),
     ((101, 99), (367, 360)), ((576, 768), (360, 480))],
)  # fmt: skip
def test_resize_rule_of_detectron2(size, expected):
    assert resized_shape(*size, shortest_edge=360, longest_edge=1333) == expected


def test_resize_uses_pil_bilinear_on_uint8():
    from PIL import Image

    frame = np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    out = GenVISVideoProcessor(do_normalize=False)(videos=[frame[None]], return_tensors="pt")["pixel_values"]
    expected = np.array(Image.fromarray(frame).resize((480, 360), Image.BILINEAR))
    assert out.shape[-2:] == (384, 480)  # 360 padded to a multiple of 32
    assert torch.equal(out[0, 0, :, :360], torch.from_numpy(expected).permute(2, 0, 1).float())


# ---------------------------------------------------------------------------------------------- BaseVideoProcessor contract
def _demo_clip(tmp_path, frames=12):
    from genvis_hf.processing.video_io import write_video

    video = np.random.default_rng(3).integers(0, 256, (frames, 32, 48, 3), dtype=np.uint8)
    return write_video(tmp_path / "clip.mp4", video, fps=12)


def test_a_video_path_goes_through_transformers_loader_and_equals_its_frames(tmp_path, monkeypatch):
    import transformers.video_utils

    from genvis_hf.processing.video_io import read_video

    path = _demo_clip(tmp_path)
    calls = []
    original = transformers.video_utils.load_video
    monkeypatch.setattr(transformers.video_utils, "load_video", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    processor = GenVISVideoProcessor(do_resize=False)
    out = processor(videos=str(path), return_tensors="pt", return_metadata=True)
    assert calls == [str(path)]
    reference = processor(videos=[read_video(path)], return_tensors="pt")
    assert torch.equal(out["pixel_values"], reference["pixel_values"])
    metadata = out["video_metadata"][0]
    assert (metadata.total_num_frames, metadata.fps, list(metadata.frames_indices)) == (12, 12.0, list(range(12)))


@pytest.mark.parametrize("source", ["file", "array", "frame_list"])
def test_frame_sampling_by_count_and_by_fps(tmp_path, source):
    from genvis_hf.processing.video_io import read_video

    path = _demo_clip(tmp_path)
    frames = read_video(path)
    video = {"file": str(path), "array": frames, "frame_list": list(frames)}[source]
    metadata = None if source == "file" else {"fps": 12}
    processor = GenVISVideoProcessor(do_resize=False)
    by_count = processor(videos=[video], do_sample_frames=True, num_frames=4, video_metadata=metadata,
                         return_metadata=True, return_tensors="pt")  # fmt: skip
    assert list(by_count["video_metadata"][0].frames_indices) == [0, 3, 6, 9]
    expected = processor(videos=[frames[[0, 3, 6, 9]]], return_tensors="pt")["pixel_values"]
    assert torch.equal(by_count["pixel_values"], expected)
    by_fps = processor(videos=[video], do_sample_frames=True, fps=3, video_metadata=metadata, return_metadata=True,
                       return_tensors="pt")  # fmt: skip
    assert by_fps["pixel_values"].shape[1] == 3 and list(by_fps["video_metadata"][0].frames_indices) == [0, 4, 8]
    assert processor(videos=[video], video_metadata=metadata, return_tensors="pt")["pixel_values"].shape[1] == 12


def test_frame_sampling_errors_are_one_clear_line(tmp_path):
    processor = GenVISVideoProcessor(do_resize=False)
    frames = np.zeros((6, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="no original FPS"):  # fps sampling of frames without a frame rate
        processor(videos=[frames], do_sample_frames=True, fps=2)
    with pytest.raises(ValueError, match="exceeds total_num_frames=6"):
        processor(videos=[frames], do_sample_frames=True, num_frames=9)
    with pytest.raises(ValueError, match="2 entries for 1 videos"):
        processor(videos=[frames], video_metadata=[{"fps": 1}, {"fps": 2}])
    with pytest.raises(ValueError, match="video_metadata says 5 frames, the video has 6"):
        processor(videos=[frames], video_metadata={"total_num_frames": 5})
    from conftest import shared_dir

    data = (shared_dir() / "data" / "videos" / "tree.avi").read_bytes()  # 68 frames; its header says 444
    assert processor(videos=str(shared_dir() / "data" / "videos" / "tree.avi"))["pixel_values"].shape[1] == 68
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"half.avi: ends after 36 frames .* looks truncated") as error:
        processor(videos=str(tmp_path / "half.avi"))
    assert "\n" not in str(error.value)


def test_one_source_of_truth_for_resize_and_normalisation(tmp_path):
    """The processor holds the test resize, mean/std and top-k; the model config has none of them, rejects them by
    name, and ignores them in earlier config files."""
    import json

    from genvis_hf import GenVISConfig

    processor = GenVISVideoProcessor.from_preset("genvis-swinl-ovis")
    assert (processor.size["shortest_edge"], processor.test_topk) == (448, 20)
    config = GenVISConfig.from_preset("genvis-swinl-ovis")
    assert not any(
        hasattr(config, key) for key in ("test_min_size", "test_max_size", "image_mean", "image_std", "test_topk")
    )
    with pytest.raises(TypeError, match="GenVISConfig got test_min_size: video-processor settings"):
        GenVISConfig(test_min_size=448)
    config.save_pretrained(tmp_path)
    legacy = json.loads((tmp_path / "config.json").read_text()) | {"test_min_size": 448, "image_mean": [0, 0, 0]}
    (tmp_path / "config.json").write_text(json.dumps(legacy))
    assert not hasattr(GenVISConfig.from_pretrained(tmp_path), "test_min_size")
    # a model loaded from a folder finds the processor saved with it; one built in memory gets the default
    from genvis_hf import GenVISModel
    from genvis_hf.assets import tiny_model_path

    loaded = GenVISModel.from_pretrained(tiny_model_path())
    assert GenVISVideoProcessor.from_model_config(loaded.config).size["shortest_edge"] == 120  # the bundled one's
    assert GenVISVideoProcessor.from_model_config(GenVISConfig()).size["shortest_edge"] == 360
