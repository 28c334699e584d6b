"""YTVISResultsWriter: streamed, atomic results JSON / CodaLab zip that evaluate like the in-memory list."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from ytvis_cases import random_case

from genvis_hf.evaluation import YTVISResultsWriter, encode_video_predictions, ytvis_evaluate


def _video_outputs(seed: int, num_frames: int = 4, height: int = 24, width: int = 32, k: int = 3):
    rng = np.random.default_rng(seed)
    masks = rng.random((k, num_frames, height, width)) < 0.3
    return rng.random(k), rng.integers(0, 2, size=k), masks


def test_masks_encode_to_official_rle(tmp_path: Path) -> None:
    scores, labels, masks = _video_outputs(0)
    entries = encode_video_predictions(7, scores, labels, masks)
    assert [e["category_id"] for e in entries] == [int(label) + 1 for label in labels]
    for entry, track in zip(entries, masks):
        assert entry["video_id"] == 7 and isinstance(entry["score"], float)
        for rle, mask in zip(entry["segmentations"], track):
            assert isinstance(rle["counts"], str) and rle["size"] == [24, 32]
            # identical to GenVIS' instances_to_coco_json_video encoding of a [H, W, 1] Fortran uint8 mask
            official = mask_utils.encode(np.array(mask[:, :, None], order="F", dtype="uint8"))[0]
            assert rle["counts"] == official["counts"].decode("utf-8")


def test_label_mapping_and_torch_inputs() -> None:
    scores, labels, masks = _video_outputs(1)
    as_torch = encode_video_predictions(
        3, torch.tensor(scores), torch.tensor(labels), torch.from_numpy(masks), label_to_category_id=[10, 20]
    )
    as_numpy = encode_video_predictions(3, scores, labels, masks, label_to_category_id={0: 10, 1: 20})
    assert as_torch == as_numpy
    assert {e["category_id"] for e in as_numpy} <= {10, 20}
    with pytest.raises(ValueError, match="label 1"):
        encode_video_predictions(3, scores, np.ones(3, dtype=int), masks, label_to_category_id=[10])
    with pytest.raises(ValueError, match="boolean"):
        encode_video_predictions(3, scores, labels, masks.astype(np.float32))


def test_writer_round_trip_equals_in_memory_evaluation(tmp_path: Path) -> None:
    gt, results = random_case(np.random.default_rng(5), max_videos=4)
    path = tmp_path / "results.json"
    with YTVISResultsWriter(path) as writer:
        by_video: dict[int, list] = {}
        for entry in results:
            by_video.setdefault(entry["video_id"], []).append(entry)
        for video_id, entries in by_video.items():
            writer.add_video(
                video_id,
                [e["score"] for e in entries],
                [e["category_id"] - 1 for e in entries],
                [e["segmentations"] for e in entries],  # already-RLE tracks
            )
    written = json.loads(path.read_text())
    assert len(written) == len(results) == writer.num_results
    in_order = [e for entries in by_video.values() for e in entries]
    assert ytvis_evaluate(gt, path) == ytvis_evaluate(gt, in_order)


def test_writer_streams_each_video_to_disk(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    writer = YTVISResultsWriter(path)
    sizes = []
    for seed in range(3):
        writer.add_video(seed + 1, *_video_outputs(seed))
        sizes.append(writer.temporary_path.stat().st_size)
        assert not path.exists()
    assert sizes[0] > 0 and sizes[0] < sizes[1] < sizes[2]
    writer.close()
    assert path.exists() and writer.closed and len(json.loads(path.read_text())) == 9
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("as_zip", [False, True])
def test_exception_midway_leaves_no_results_file(tmp_path: Path, as_zip: bool) -> None:
    path = tmp_path / ("submission.zip" if as_zip else "results.json")
    with pytest.raises(RuntimeError, match="model crashed"), YTVISResultsWriter(path, zip=as_zip) as writer:
        writer.add_video(1, *_video_outputs(0))
        raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []


def test_failed_run_keeps_previous_results_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("[]")
    with pytest.raises(ValueError), YTVISResultsWriter(path) as writer:
        writer.add_video(1, *_video_outputs(0))
        writer.add_video(2, [0.5], [0], np.zeros((2, 3, 4, 4), dtype=bool))  # 1 score for 2 tracks
    assert path.read_text() == "[]" and list(tmp_path.iterdir()) == [path]


def test_zip_holds_results_json_at_root(tmp_path: Path) -> None:
    gt, results = random_case(np.random.default_rng(11), max_videos=3)
    path = tmp_path / "submission.zip"
    with YTVISResultsWriter(path, zip=True) as writer:
        writer.add_results(results)
    assert list(tmp_path.iterdir()) == [path]
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["results.json"]
        assert json.loads(archive.read("results.json")) == results
    assert ytvis_evaluate(gt, path) == ytvis_evaluate(gt, results)


def test_closed_writer_rejects_more_results(tmp_path: Path) -> None:
    writer = YTVISResultsWriter(tmp_path / "r.json")
    writer.close()
    assert json.loads((tmp_path / "r.json").read_text()) == []
    with pytest.raises(RuntimeError, match="closed"):
        writer.add_video(1, *_video_outputs(0))
