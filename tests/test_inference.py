"""Streaming segmentation, the pipeline and the `genvis-hf segment` command on a real video."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, shared_dir, tiny_config_kwargs
from pycocotools import mask as mask_utils
from transformers import pipeline

from genvis_hf import GenVISConfig, GenVISForVideoInstanceSegmentation, GenVISVideoProcessor, decode_masks
from genvis_hf.inference import segment_video
from genvis_hf.processing.video_io import VideoReader, read_video

TREE = shared_dir() / "data" / "videos" / "tree.avi"  # 68 frames, 240x320


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = GenVISForVideoInstanceSegmentation(GenVISConfig(**tiny_config_kwargs(clip_length=3)))
    directory = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(directory)
    GenVISVideoProcessor(size={"shortest_edge": 120, "longest_edge": 1333}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model_and_processor(tiny_model_dir):
    return (GenVISForVideoInstanceSegmentation.from_pretrained(tiny_model_dir).eval(),
            GenVISVideoProcessor.from_pretrained(tiny_model_dir))  # fmt: skip


def test_streaming_equals_the_in_memory_path(model_and_processor):
    model, processor = model_and_processor
    streamed = segment_video(model, processor, TREE, progress=False)
    frames = read_video(TREE)
    with torch.no_grad():
        outputs = model(**processor(videos=[frames], return_tensors="pt"))
    expected = processor.post_process_video_instance_segmentation(outputs, target_sizes=[frames.shape[1:3]])[0]
    assert streamed.num_frames == 68 and (streamed.height, streamed.width) == (240, 320)
    assert torch.equal(streamed.scores, expected["scores"])
    assert torch.equal(streamed.labels, expected["labels"])
    assert torch.equal(streamed.masks(), expected["masks"])


def test_clip_length_override_and_max_frames(model_and_processor):
    model, processor = model_and_processor
    online = segment_video(model, processor, TREE, clip_length=1, max_frames=7, progress=False)
    frames = read_video(TREE, max_frames=7)
    with torch.no_grad():
        outputs = model(**processor(videos=[frames], return_tensors="pt"), clip_length=1)
    assert outputs.num_clips.tolist() == [7]
    expected = processor.post_process_video_instance_segmentation(outputs)[0]
    assert online.num_frames == 7 and torch.equal(online.scores, expected["scores"])


def test_one_frame_and_a_4k_frame(model_and_processor):
    model, processor = model_and_processor
    big = np.random.default_rng(0).integers(0, 256, (2160, 3840, 3), dtype=np.uint8)
    result = segment_video(model, processor, [big], progress=False, top_k=2)
    assert result.num_frames == 1 and result.masks().shape == (2, 1, 2160, 3840)


def test_pipeline_on_a_video_a_directory_and_frames(tiny_model_dir, tmp_path):
    segmenter = pipeline("video-instance-segmentation", model=str(tiny_model_dir))
    instances = segmenter(str(TREE), max_frames=6, return_rle=False)
    assert len(instances) == 10
    first = instances[0]
    assert set(first) == {"score", "label", "label_id", "masks"} and first["masks"].shape == (6, 240, 320)
    compressed = segmenter(str(TREE), max_frames=6)  # the default: per-frame RLEs, memory flat in the video's length
    assert set(compressed[0]) == {"score", "label", "label_id", "segmentations"}
    assert [i["score"] for i in compressed] == [i["score"] for i in instances]
    assert all(torch.equal(decode_masks(c["segmentations"]), i["masks"]) for c, i in zip(compressed, instances))
    assert first["label"] == segmenter.model.config.id2label[first["label_id"]]
    assert [i["score"] for i in instances] == sorted((i["score"] for i in instances), reverse=True)
    frames = read_video(TREE, max_frames=6)
    from PIL import Image

    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{index:03d}.png")
    from_directory = segmenter(str(tmp_path))
    from_frames = segmenter(list(frames), threshold=0.0, return_rle=False)
    assert [i["score"] for i in from_directory] == [i["score"] for i in instances]
    decoded = mask_utils.decode(from_directory[0]["segmentations"][0])
    assert np.array_equal(decoded.astype(bool), instances[0]["masks"][0].numpy())
    assert torch.equal(from_frames[0]["masks"], instances[0]["masks"])


def _segment(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genvis_hf.cli", "segment", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT)  # fmt: skip


def test_command_line_writes_results_and_overlays(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    completed = _segment(str(TREE), "--model", str(tiny_model_dir), "--output-dir", str(out), "--overlay", "--gif",
                         "--max-frames", "9", "--no-progress", "--overlay-threshold", "0")  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in out.iterdir()) == ["tree.gif", "tree.json", "tree.mp4"]
    entries = json.loads((out / "tree.json").read_text())
    assert len(entries) == 10
    entry = entries[0]
    assert set(entry) == {"video_id", "category_id", "label", "score", "segmentations"}
    assert entry["video_id"] == "tree" and len(entry["segmentations"]) == 9
    assert entry["segmentations"][0]["size"] == [240, 320]
    overlay_reader = VideoReader(out / "tree.mp4")
    overlay = np.stack(list(overlay_reader))
    assert overlay.shape == (9, 240, 320, 3)
    source_reader = VideoReader(TREE, max_frames=9)
    list(source_reader)  # tree.avi has a variable frame rate: the overlay keeps each frame's time
    np.testing.assert_allclose(overlay_reader.frame_times, source_reader.frame_times[:9], atol=1e-3)
    original = read_video(TREE, max_frames=9).astype(int)
    assert np.abs(overlay.astype(int) - original).mean() > 1.0  # instances were drawn


def test_command_line_bad_inputs_write_nothing(tiny_model_dir, tmp_path):
    (tmp_path / "fake.mp4").write_text("not a video")
    out = tmp_path / "out"
    completed = _segment(str(tmp_path / "fake.mp4"), str(tmp_path / "absent.avi"), "--model", str(tiny_model_dir),
                         "--output-dir", str(out), "--overlay", "--no-progress")  # fmt: skip
    assert completed.returncode == 1
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "fake.mp4: not a readable video" in errors[0] and "absent.avi" in errors[1]
    assert "Traceback" not in completed.stderr
    assert not out.exists() or list(out.iterdir()) == []
