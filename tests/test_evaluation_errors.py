"""Bad ground truth / results: a YTVISFormatError whose message names the offending item."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from evaluation_helpers import ytvis_fixture_dir

from genvis_hf.evaluation import YTVISFormatError, ytvis_evaluate

GT = json.loads((ytvis_fixture_dir() / "gt.json").read_text())
RESULTS = json.loads((ytvis_fixture_dir() / "results.json").read_text())
FRAMES_OF_VIDEO_1 = next(v["length"] for v in GT["videos"] if v["id"] == 1)


def _first_frame_rle(results: list) -> dict:
    """The first compressed RLE of results[0] (video 1)."""
    assert results[0]["video_id"] == 1
    return next(s for s in results[0]["segmentations"] if s)


def _set_counts(value: object) -> Callable[[list], None]:
    def mutate(results: list) -> None:
        _first_frame_rle(results)["counts"] = value

    return mutate


def _truncate_mid_count(results: list) -> None:
    rle = _first_frame_rle(results)
    # drop characters until the string ends inside a multi-character count (continuation bit 0x20 set)
    counts = rle["counts"]
    cut = next(i for i in range(len(counts) - 1, 0, -1) if (ord(counts[i - 1]) - 48) & 0x20)
    rle["counts"] = counts[:cut]


RESULT_CASES: dict[str, tuple[Callable[[list], None], str]] = {
    "unknown video": (lambda r: r[3].update(video_id=999), r"results\[3\]: unknown video_id 999"),
    "unknown category": (
        lambda r: r[2].update(category_id=77),
        r"results\[2\] \(video_id=\d+\): unknown category_id 77",
    ),
    "frame count": (
        lambda r: r[0]["segmentations"].pop(),
        rf"results\[0\] \(video_id=1\): 'segmentations' has {FRAMES_OF_VIDEO_1 - 1} frames "
        rf"but video 1 has {FRAMES_OF_VIDEO_1} frames",
    ),
    "missing score": (lambda r: r[1].pop("score"), r"results\[1\]: missing key\(s\) 'score'"),
    "missing segmentations": (lambda r: r[4].pop("segmentations"), r"results\[4\]: missing key\(s\) 'segmentations'"),
    "missing ids": (
        lambda r: (r[5].pop("video_id"), r[5].pop("category_id")),
        r"results\[5\]: missing key\(s\) 'video_id', 'category_id'",
    ),
    "nan score": (lambda r: r[0].update(score=float("nan")), r"results\[0\] \(video_id=1\): 'score' must be a finite"),
    "string video id": (lambda r: r[0].update(video_id="1"), r"results\[0\]: 'video_id' must be an integer"),
    "not a dict": (lambda r: r.__setitem__(6, [1, 2]), r"results\[6\]: expected a JSON object"),
    "segmentations not a list": (lambda r: r[0].update(segmentations="abc"), r"'segmentations' must be a list"),
    "garbage counts": (_set_counts("!!garbage!!"), r"results\[0\] \(video_id=1\) frame \d+: malformed compressed RLE"),
    "truncated counts": (_truncate_mid_count, r"results\[0\] \(video_id=1\) frame \d+: malformed compressed RLE"),
    "counts too short": (_set_counts("0"), r"results\[0\] \(video_id=1\) frame \d+: malformed compressed RLE"),
    "counts is a number": (_set_counts(12), r"results\[0\] \(video_id=1\) frame \d+: RLE 'counts' must be a string"),
    "uncompressed wrong total": (_set_counts([5, 5]), r"frame \d+: uncompressed RLE 'counts' sum to 10"),
    "wrong size": (
        lambda r: _first_frame_rle(r).update(size=[640, 360]),
        r"results\[0\] \(video_id=1\) frame \d+: RLE 'size' is \[640, 360\], expected .* \[360, 640\]",
    ),
    "missing size": (lambda r: _first_frame_rle(r).pop("size"), r"frame \d+: an RLE segmentation needs both"),
    "frame is a string": (
        lambda r: r[0]["segmentations"].__setitem__(0, "oops"),
        r"results\[0\] \(video_id=1\) frame 0: a segmentation must be an RLE dict",
    ),
}


@pytest.mark.parametrize("case", sorted(RESULT_CASES))
def test_bad_results_name_the_entry(case: str) -> None:
    mutate, message = RESULT_CASES[case]
    results = copy.deepcopy(RESULTS)
    mutate(results)
    with pytest.raises(YTVISFormatError, match=message):
        ytvis_evaluate(GT, results)


GT_CASES: dict[str, tuple[Callable[[dict], None], str]] = {
    "missing areas": (lambda g: g["annotations"][2].pop("areas"), r"annotations\[2\]: missing key\(s\) 'areas'"),
    "duplicate id": (
        lambda g: g["annotations"][1].update(id=g["annotations"][0]["id"]),
        r"annotations\[1\] \(id=\d+\): duplicate annotation id",
    ),
    "frame count": (
        lambda g: g["annotations"][0]["segmentations"].append(None),
        r"annotations\[0\] \(id=\d+\): 'segmentations' has \d+ frames but video \d+ has \d+ frames",
    ),
    "bad iscrowd": (
        lambda g: g["annotations"][0].update(iscrowd=2),
        r"annotations\[0\] \(id=\d+\): 'iscrowd' must be 0 or 1",
    ),
    "bad areas": (
        lambda g: g["annotations"][0].update(areas="big"),
        r"annotations\[0\] \(id=\d+\): 'areas' must be a list",
    ),
    "video without size": (lambda g: g["videos"][1].pop("height"), r"videos\[1\]: missing key\(s\) 'height'"),
    "no categories": (lambda g: g.pop("categories"), r"ground truth: missing or non-list 'categories'"),
    "polygon of strings": (
        lambda g: g["annotations"][0]["segmentations"].__setitem__(0, [["a", "b", "c"]]),
        r"annotations\[0\] \(id=\d+\) frame 0: a polygon segmentation must be",
    ),
}


@pytest.mark.parametrize("case", sorted(GT_CASES))
def test_bad_ground_truth_names_the_item(case: str) -> None:
    mutate, message = GT_CASES[case]
    gt = copy.deepcopy(GT)
    mutate(gt)
    with pytest.raises(YTVISFormatError, match=message):
        ytvis_evaluate(gt, RESULTS)


def test_video_without_length_takes_its_first_track_frame_count() -> None:
    gt = copy.deepcopy(GT)
    for item in gt["videos"]:
        item.pop("length")
        item.pop("file_names", None)
    assert ytvis_evaluate(gt, RESULTS) == ytvis_evaluate(GT, RESULTS)
    results = copy.deepcopy(RESULTS)
    results[0]["segmentations"].append(None)
    with pytest.raises(YTVISFormatError, match=r"results\[0\] \(video_id=1\): 'segmentations' has \d+ frames but"):
        ytvis_evaluate(gt, results)


def test_unreadable_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(YTVISFormatError, match=r"results file .*broken\.json is not valid JSON"):
        ytvis_evaluate(GT, broken)
    with pytest.raises(YTVISFormatError, match="ground-truth file not found"):
        ytvis_evaluate(tmp_path / "missing.json", RESULTS)
    with pytest.raises(YTVISFormatError, match="results must be a JSON list"):
        ytvis_evaluate(GT, {"video_id": 1})


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="max_dets"):
        ytvis_evaluate(GT, RESULTS, max_dets=(0, 10))
    with pytest.raises(ValueError, match="area_ranges"):
        ytvis_evaluate(GT, RESULTS, area_ranges={"all": (0, 1e10)})


def test_ground_truth_on_unlisted_video_is_ignored_with_a_warning() -> None:
    gt = copy.deepcopy(GT)
    orphan = {**copy.deepcopy(gt["annotations"][0]), "id": 10_000, "video_id": 12345}
    gt["annotations"].append(orphan)
    with pytest.warns(UserWarning, match="ignored 1 ground-truth annotation"):
        metrics = ytvis_evaluate(gt, RESULTS)
    assert metrics == ytvis_evaluate(GT, RESULTS)
