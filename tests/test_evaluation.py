"""ytvis_evaluate: the official evaluator's numbers on the shared fixture, and hand-computed cases.

The implementation was also compared with the original GenVIS ``ytvoseval.py`` (run from a scratch copy
outside the repository; these tests do not need it) on 3,000 random cases from ``ytvis_cases.random_case``,
120 cases with > 100 detections per video, 400 cases of irregular RLE and on every hand-made case below:
max |difference| over all twelve metrics and the per-category APs was 0.0 (see ``ytvis_eval``'s docstring).
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
from evaluation_helpers import box, dataset, gt_track, result, video, ytvis_fixture_dir

from genvis_hf.evaluation import metric_keys, ytvis_evaluate
from genvis_hf.evaluation.rle import compressed_rle_stats
from genvis_hf.evaluation.ytvis_eval import IOU_THRESHOLDS

KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


@pytest.fixture(scope="module")
def fixture_metrics() -> dict:
    directory = ytvis_fixture_dir()
    return ytvis_evaluate(directory / "gt.json", directory / "results.json")


@pytest.mark.parametrize("key", KEYS)
def test_fixture_matches_official_evaluator(fixture_metrics: dict, key: str) -> None:
    expected = json.loads((ytvis_fixture_dir() / "expected_metrics.json").read_text())["metrics"]
    assert set(expected) == set(KEYS)
    assert fixture_metrics[key] == pytest.approx(expected[key], abs=1e-9)


def test_fixture_keys_and_per_category(fixture_metrics: dict) -> None:
    assert list(fixture_metrics)[:12] == KEYS == metric_keys()
    gt = json.loads((ytvis_fixture_dir() / "gt.json").read_text())
    per_category = fixture_metrics["per_category_AP"]
    assert set(per_category) == {c["name"] for c in gt["categories"]}
    # AP is the mean of the per-category APs when every category has ground truth
    assert np.mean(list(per_category.values())) == pytest.approx(fixture_metrics["AP"], abs=1e-12)


def test_loaded_inputs_equal_paths_and_are_not_modified() -> None:
    directory = ytvis_fixture_dir()
    gt = json.loads((directory / "gt.json").read_text())
    results = json.loads((directory / "results.json").read_text())
    gt_copy, results_copy = copy.deepcopy(gt), copy.deepcopy(results)
    assert ytvis_evaluate(gt, results) == ytvis_evaluate(directory / "gt.json", str(directory / "results.json"))
    assert gt == gt_copy and results == results_copy


def _one_video(num_frames: int = 5, size: int = 10) -> dict:
    return video(1, size, size, num_frames)


def test_video_iou_counts_frames_where_only_one_side_is_present() -> None:
    g = box(10, 10, 0, 0, 2, 2)
    # frames 0-2: identical; frame 3: prediction only; frame 4: both absent -> IoU = 12 / 16 = 0.75
    gt = dataset([_one_video()], [gt_track(1, 1, 1, [g, g, g, None, None])])
    res = [result(1, 1, 0.9, [g, g, g, box(10, 10, 5, 5, 7, 7), None])]
    metrics = ytvis_evaluate(gt, res)
    matched_thresholds = int(np.count_nonzero(IOU_THRESHOLDS <= 0.75))
    assert matched_thresholds == 6
    assert metrics["AP"] == pytest.approx(matched_thresholds / 10, abs=1e-12)
    assert metrics["AP75"] == pytest.approx(1.0) and metrics["AR100"] == pytest.approx(0.6, abs=1e-12)


def test_crowd_uses_plain_video_iou_not_coco_crowd_iou() -> None:
    crowd = box(10, 10, 0, 0, 10, 5)  # 50 pixels, left half
    person = box(10, 10, 2, 6, 6, 9)
    annotations = [gt_track(1, 1, 1, [person] * 2), gt_track(2, 1, 1, [crowd] * 2, iscrowd=1)]
    gt = dataset([_one_video(2)], annotations)
    exact_person = result(1, 1, 0.5, [person] * 2)
    # inside the crowd region but IoU 10/50 = 0.2: COCO's crowd IoU (|d&g|/|d|) would ignore it; official does not
    inside_crowd = result(1, 1, 0.9, [box(10, 10, 0, 0, 5, 1)] * 2)
    assert ytvis_evaluate(gt, [inside_crowd, exact_person])["AP"] == pytest.approx(0.5, abs=1e-12)
    on_crowd = result(1, 1, 0.9, [crowd] * 2)
    assert ytvis_evaluate(gt, [on_crowd, exact_person])["AP"] == pytest.approx(1.0, abs=1e-12)


def test_area_ranges_are_inclusive_and_use_the_areas_field() -> None:
    g = box(10, 10, 0, 0, 3, 3)
    on_boundary = gt_track(1, 1, 1, [g, g])
    on_boundary["areas"] = [128**2, 0]  # the 0 is skipped like the official "if a" filter
    gt = dataset([_one_video(2)], [on_boundary])
    metrics = ytvis_evaluate(gt, [result(1, 1, 0.8, [g, g])])
    # 128^2 is both small and medium (precision is tp / (tp + fp + eps), hence approx)
    assert metrics["APs"] == pytest.approx(1.0) and metrics["APm"] == pytest.approx(1.0)
    assert metrics["APl"] == -1.0 and metrics["ARl"] == -1.0  # no ground truth in that range
    # Large ground truth: a matched small prediction still counts; an unmatched small one (higher score) is
    # ignored in the large range but is a false positive over all areas.
    on_boundary["areas"] = [256**2 + 0.5, None]
    stray = result(1, 1, 0.9, [box(10, 10, 6, 6, 9, 9)] * 2)
    metrics = ytvis_evaluate(gt, [result(1, 1, 0.8, [g, g]), stray])
    assert (metrics["APs"], metrics["APm"]) == (-1.0, -1.0)
    assert metrics["APl"] == pytest.approx(1.0) and metrics["AP"] == pytest.approx(0.5)


@pytest.mark.parametrize(("order", "expected_ap"), [((0, 1), 1.0), ((1, 0), 0.5)])
def test_tied_scores_keep_results_list_order(order: tuple[int, int], expected_ap: float) -> None:
    g = box(10, 10, 0, 0, 4, 4)
    gt = dataset([_one_video(1)], [gt_track(1, 1, 1, [g])])
    candidates = [result(1, 1, 0.5, [g]), result(1, 1, 0.5, [box(10, 10, 6, 6, 9, 9)])]
    assert ytvis_evaluate(gt, [candidates[i] for i in order])["AP"] == pytest.approx(expected_ap, abs=1e-12)


def test_empty_results_score_zero_where_ground_truth_exists() -> None:
    g = box(10, 10, 0, 0, 4, 4)
    gt = dataset([_one_video(1), video(2, 10, 10, 1)], [gt_track(1, 1, 1, [g])])
    metrics = ytvis_evaluate(gt, [])
    for key in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AR100", "ARs"):
        assert metrics[key] == 0.0
    for key in ("APm", "APl", "ARm", "ARl"):
        assert metrics[key] == -1.0
    assert metrics["per_category_AP"] == {"class1": 0.0, "class2": -1.0}


def test_category_without_ground_truth_is_excluded() -> None:
    g = box(10, 10, 0, 0, 4, 4)
    gt = dataset([_one_video(1)], [gt_track(1, 1, 1, [g])], num_categories=3)
    res = [result(1, 1, 0.5, [g]), result(1, 2, 0.9, [g]), result(1, 3, 0.9, [box(10, 10, 5, 5, 9, 9)])]
    metrics = ytvis_evaluate(gt, res)
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["per_category_AP"] == {"class1": pytest.approx(1.0), "class2": -1.0, "class3": -1.0}


def test_detection_limit_per_video_and_category() -> None:
    masks = [box(10, 10, 0, 0, 2, 2), box(10, 10, 4, 4, 6, 6), box(10, 10, 7, 7, 9, 9)]
    gt = dataset([_one_video(1)], [gt_track(i + 1, 1, 1, [m]) for i, m in enumerate(masks)])
    res = [result(1, 1, 0.9 - 0.1 * i, [m]) for i, m in enumerate(masks)]
    metrics = ytvis_evaluate(gt, res, max_dets=(2, 1, 3))
    assert [k for k in metrics if k.startswith("AR") and k[2:].isdigit()] == ["AR1", "AR2", "AR3"]
    assert metrics["AR1"] == pytest.approx(1 / 3) and metrics["AR2"] == pytest.approx(2 / 3)
    assert metrics["AR3"] == 1.0 and metrics["AP"] == pytest.approx(1.0, abs=1e-12)
    # two true positives out of three: precision 1 at the 67 recall points 0.00 ... 0.66, 0 beyond 2/3
    assert ytvis_evaluate(gt, res, max_dets=(1, 2))["AP"] == pytest.approx(67 / 101, abs=1e-12)


def test_ground_truth_id_zero_behaves_like_the_official_code() -> None:
    g = box(10, 10, 0, 0, 4, 4)
    gt = dataset([_one_video(1)], [gt_track(0, 1, 1, [g])])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = ytvis_evaluate(gt, [result(1, 1, 0.9, [g])])
    assert any("id 0" in str(w.message) for w in caught)
    assert metrics["AP"] == 0.0  # the official evaluator treats a match to id 0 as "no match"


def test_ground_truth_formats_give_identical_numbers() -> None:
    """Polygon, uncompressed and compressed RLE ground truth of the same boxes score the same."""
    g = box(12, 16, 2, 3, 8, 11)
    base = gt_track(1, 1, 1, [g, None])
    as_polygon = copy.deepcopy(base)
    as_polygon["segmentations"][0] = [[3.0, 2.0, 11.0, 2.0, 11.0, 8.0, 3.0, 8.0]]
    flat = g.T.reshape(-1).astype(np.int8)
    edges = np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]))
    as_counts = copy.deepcopy(base)
    as_counts["segmentations"][0] = {"size": [12, 16], "counts": np.diff(edges).tolist()}
    res = [result(1, 1, 0.7, [box(12, 16, 2, 3, 8, 9), None])]
    scores = [ytvis_evaluate(dataset([video(1, 12, 16, 2)], [a]), res)["AP"] for a in (base, as_counts)]
    assert scores[0] == scores[1] and 0 < scores[0] < 1
    polygon_ap = ytvis_evaluate(dataset([video(1, 12, 16, 2)], [as_polygon]), res)["AP"]
    assert 0 < polygon_ap < 1  # pycocotools rasterises the polygon slightly differently from the box


def test_vectorised_rle_decoder_agrees_with_pycocotools() -> None:
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    strings, pixels, areas = [], [], []
    for _ in range(200):
        height, width = rng.integers(1, 50, size=2)
        mask = rng.random((height, width)) < rng.choice([0.0, 0.02, 0.5, 1.0])
        strings.append(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"])
        pixels.append(height * width)
        areas.append(int(mask.sum()))
    stats = compressed_rle_stats(strings, np.array(pixels))
    assert stats.valid.all() and not stats.irregular.any()
    reference = [int(mask_utils.area({"size": [1, p], "counts": s})) for s, p in zip(strings, pixels)]
    assert stats.areas.tolist() == areas == reference


def test_irregular_rle_follows_pycocotools_merge_like_the_official_code() -> None:
    """Zero-length runs (valid RLE, never written by mask.encode) make ``merge`` stop early; the official
    evaluator's per-frame ``area(merge(...))`` inherits that, and so must we."""
    from pycocotools import mask as mask_utils

    height, width = 6, 8

    def full_columns(x0: int, x1: int) -> dict:
        counts = [x0 * height] + [height, 0] * (x1 - x0 - 1) + [height, height * (width - x1)]
        encoded = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        return {"size": [height, width], "counts": encoded["counts"].decode("ascii")}

    g, d = full_columns(1, 6), full_columns(2, 7)
    official_iou = mask_utils.area(mask_utils.merge([d, g], True)) / mask_utils.area(mask_utils.merge([d, g], False))
    assert official_iou != pytest.approx(4 / 6)  # the true IoU: this input does trigger the early stop
    gt = {
        "videos": [video(1, height, width, 1)],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": [g], "areas": [30]}],
    }
    metrics = ytvis_evaluate(gt, [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [d]}])
    expected = np.count_nonzero(official_iou >= IOU_THRESHOLDS) / len(IOU_THRESHOLDS)
    assert metrics["AP"] == pytest.approx(expected, abs=1e-12)
