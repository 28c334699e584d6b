"""Property tests of ytvis_evaluate on random YouTube-VIS cases (hypothesis picks the generator seed)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ytvis_cases import random_case, visible

from genvis_hf.evaluation import ytvis_evaluate

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def _case(seed: int, **kwargs) -> tuple[dict, list]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return random_case(np.random.default_rng(seed), **kwargs)


def _perfect_results(gt: dict) -> list[dict]:
    """One prediction per regular ground-truth track, with its exact masks and category, distinct scores."""
    regular = [a for a in gt["annotations"] if not a["iscrowd"]]
    return [
        {
            "video_id": a["video_id"],
            "category_id": a["category_id"],
            "score": 1.0 - i / (len(regular) + 1),
            "segmentations": copy.deepcopy(a["segmentations"]),
        }
        for i, a in enumerate(regular)
    ]


def _has_regular_track(gt: dict) -> bool:
    return any(not a["iscrowd"] for a in gt["annotations"])


@SETTINGS
@given(seed=seeds)
def test_perfect_predictions_score_one(seed: int) -> None:
    gt, _ = _case(seed)
    # a track without any non-empty mask can never be matched (IoU 0 with anything), officially too
    gt["annotations"] = [a for a in gt["annotations"] if visible(a, gt)]
    assume(_has_regular_track(gt))
    metrics = ytvis_evaluate(gt, _perfect_results(gt))
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["AR100"] == pytest.approx(1.0, abs=1e-12)
    for key in ("APs", "APm", "APl", "ARs", "ARm", "ARl"):
        assert metrics[key] == -1.0 or metrics[key] == pytest.approx(1.0, abs=1e-12)


@SETTINGS
@given(seed=seeds, data=st.data())
def test_permuting_results_does_not_change_metrics(seed: int, data: st.DataObject) -> None:
    formats = ("compressed", "uncompressed", "polygon", "irregular")
    gt, results = _case(seed, gt_formats=formats, result_formats=("compressed", "irregular"))
    assume(results)
    # distinct scores: with ties the official evaluator (and this one) keeps results-list order
    for i, score in enumerate(np.random.default_rng(seed).permutation(len(results))):
        results[i]["score"] = float(score + 1) / (len(results) + 1)
    permuted = data.draw(st.permutations(results))
    assert ytvis_evaluate(gt, permuted) == ytvis_evaluate(gt, results)


@SETTINGS
@given(seed=seeds, score=st.floats(min_value=0.0, max_value=1.0))
def test_prediction_on_crowd_region_does_not_lower_ap(seed: int, score: float) -> None:
    gt, results = _case(seed, crowd_prob=0.5)
    crowds = [a for a in gt["annotations"] if a["iscrowd"] and visible(a, gt)]
    assume(crowds)
    before = ytvis_evaluate(gt, results)
    crowd = crowds[0]
    on_crowd = {
        "video_id": crowd["video_id"],
        "category_id": crowd["category_id"],
        "score": score,
        "segmentations": copy.deepcopy(crowd["segmentations"]),
    }
    after = ytvis_evaluate(gt, [*results, on_crowd])
    for key in ("AP", "AP50", "AP75"):
        assert after[key] >= before[key] - 1e-12
