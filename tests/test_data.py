"""Training data: synthetic set, YouTube-VIS/COCO loading, segmentation formats, clip sampling, augmentation,
collator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from genvis_hf.data import (
    ClipAugmentation,
    GenVISDataCollator,
    VideoClipDataset,
    VideoEvalDataset,
    decode_segmentation,
    load_coco_as_videos,
    load_ytvis,
    make_synthetic_dataset,
    sample_frame_indices,
)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    annotations = make_synthetic_dataset(root, num_videos=4, seed=3, height=48, width=64, min_frames=4, max_frames=6)
    return root, annotations


def test_synthetic_set_is_valid_youtube_vis(synthetic):
    root, annotations = synthetic
    data = json.loads(annotations.read_text())
    assert {c["name"] for c in data["categories"]} == {"circle", "square", "triangle", "cross"}
    assert len(data["videos"]) == 4
    for video in data["videos"]:
        assert len(video["file_names"]) == video["length"]
        assert (root / "JPEGImages" / video["file_names"][0]).is_file()
    for annotation in data["annotations"]:
        video = data["videos"][annotation["video_id"] - 1]
        assert len(annotation["segmentations"]) == video["length"]
        visible = [s for s in annotation["segmentations"] if s is not None]
        assert visible and all(s["size"] == [48, 64] for s in visible)


def test_load_ytvis_rows_and_categories(synthetic, tmp_path):
    root, annotations = synthetic
    source = load_ytvis(annotations, root / "JPEGImages", cache_dir=str(tmp_path))
    assert len(source) == 4 and source.id2label == {0: "circle", 1: "square", 2: "triangle", 3: "cross"}
    row = source.videos[0]
    assert row["length"] == len(row["file_names"]) and all(0 <= label < 4 for label in row["labels"])
    assert len(row["segmentations"]) == len(row["instance_ids"])


def test_decode_segmentation_formats():
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:4, 2:6] = True
    compressed = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    compressed["counts"] = compressed["counts"].decode()
    # Uncompressed RLE: column-major run lengths starting with zeros.
    flat = mask.flatten(order="F").astype(int)
    runs, current, count = [], 0, 0
    for value in flat:
        if value == current:
            count += 1
        else:
            runs.append(count)
            current, count = value, 1
    runs.append(count)
    uncompressed = {"size": [6, 8], "counts": runs}
    polygon = [[2.0, 1.0, 6.0, 1.0, 6.0, 4.0, 2.0, 4.0]]
    for segmentation in (compressed, uncompressed):
        assert np.array_equal(decode_segmentation(json.dumps(segmentation), 6, 8), mask)
    assert decode_segmentation(json.dumps(polygon), 6, 8)[2, 3]
    assert not decode_segmentation("", 6, 8).any()


def test_clip_sampling_stays_in_range_and_is_sorted():
    rng = np.random.default_rng(0)
    for _ in range(50):
        indices = sample_frame_indices(30, 5, 6, rng)
        assert indices == sorted(indices) and len(indices) == 5
        assert max(indices) - min(indices) <= 12 and min(indices) >= 0 and max(indices) < 30
    assert sample_frame_indices(1, 3, 6, rng) == [0, 0, 0]


def test_augmentation_is_one_decision_per_clip_and_keeps_masks_on_their_pixels():
    frames = [np.zeros((40, 60, 3), dtype=np.uint8) for _ in range(3)]
    masks = torch.zeros(1, 3, 40, 60, dtype=torch.bool)
    for t, frame in enumerate(frames):
        frame[10:20, 5 + t * 10 : 15 + t * 10] = 255
        masks[0, t, 10:20, 5 + t * 10 : 15 + t * 10] = True
    augmentation = ClipAugmentation(min_sizes=(32, 48), max_size=200, flip_prob=0.5, crop_prob=0.5)
    for seed in range(8):
        video, out_masks = augmentation(frames, masks, np.random.default_rng(seed))
        assert video.shape[0] == 3 and out_masks.shape[1:] == (3, *video.shape[-2:])
        assert min(video.shape[-2:]) in (32, 48)
        bright = video.float().mean(1) > 127
        for t in range(3):
            if out_masks[0, t].any():  # the mask covers the bright square it was drawn with
                overlap = (bright[t] & out_masks[0, t]).sum() / out_masks[0, t].sum()
                assert overlap > 0.8


def test_clip_dataset_is_a_function_of_its_seed_and_collator_pads(synthetic, tmp_path):
    root, annotations = synthetic
    source = load_ytvis(annotations, root / "JPEGImages", cache_dir=str(tmp_path))
    dataset = VideoClipDataset(source, num_frames=3, frame_range=2, augmentation=ClipAugmentation((32, 40), 100))
    a, b = dataset[(1, 123)], dataset[(1, 123)]
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"]["masks"], b["labels"]["masks"])
    assert a["pixel_values"].dtype == torch.uint8 and a["pixel_values"].shape[:2] == (3, 3)
    batch = GenVISDataCollator()([dataset[(0, 1)], dataset[(2, 5)]])
    assert batch["pixel_values"].shape[-2] % 32 == 0 and batch["pixel_values"].shape[-1] % 32 == 0
    for b_index, label in enumerate(batch["labels"]):
        assert label["masks"].shape[-2:] == batch["pixel_values"].shape[-2:]
        assert not (label["masks"] & ~batch["pixel_mask"][b_index].bool()).any()  # masks only on real pixels

    evaluation = VideoEvalDataset(source, shortest_edge=32, longest_edge=100)[0]
    assert min(evaluation["pixel_values"].shape[-2:]) == 32
    assert evaluation["labels"]["original_size"].tolist() == [48, 64]


def test_coco_images_become_pseudo_videos(tmp_path):
    image = np.zeros((40, 50, 3), dtype=np.uint8)
    image[5:25, 5:30] = 200
    Image.fromarray(image).save(tmp_path / "a.jpg")
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 50}],
            "annotations": [{"id": 9, "image_id": 1, "category_id": 3, "iscrowd": 0,
                             "segmentation": [[5, 5, 30, 5, 30, 25, 5, 25]], "area": 500, "bbox": [5, 5, 25, 20]}],
            "categories": [{"id": 3, "name": "thing"}]}  # fmt: skip
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    source = load_coco_as_videos(tmp_path / "coco.json", tmp_path, cache_dir=str(tmp_path / "cache"))
    sample = VideoClipDataset(source, 4, 0, ClipAugmentation((32,), 100))[(0, 7)]
    assert sample["pixel_values"].shape[0] == 4 and sample["labels"]["masks"].shape[:2] == (1, 4)
    assert sample["labels"]["class_labels"].tolist() == [0]
    assert sample["labels"]["masks"].flatten(1).any(1).all()


def test_an_annotation_file_rewritten_in_place_is_read_again(tmp_path):
    root = tmp_path / "set"
    make_synthetic_dataset(root, num_videos=2, seed=1, height=32, width=32, min_frames=2, max_frames=2)
    assert len(load_ytvis(root / "annotations.json", root / "JPEGImages", cache_dir=str(tmp_path / "c"))) == 2
    make_synthetic_dataset(root, num_videos=3, seed=1, height=32, width=32, min_frames=2, max_frames=2)
    assert len(load_ytvis(root / "annotations.json", root / "JPEGImages", cache_dir=str(tmp_path / "c"))) == 3
