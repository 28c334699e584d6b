"""The ``evaluate`` metric: loaded offline from its local directory, same numbers as ytvis_evaluate."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from evaluation_helpers import ytvis_fixture_dir

from genvis_hf.evaluation import (
    YTVIS_METRIC_PATH,
    YTVISFormatError,
    encode_video_predictions,
    flatten_metrics,
    load_ytvis_metric,
    make_ytvis_compute_metrics,
    ytvis_evaluate,
)

GT = ytvis_fixture_dir() / "gt.json"
RESULTS = json.loads((ytvis_fixture_dir() / "results.json").read_text())


def test_metric_script_is_package_data() -> None:
    script = Path(YTVIS_METRIC_PATH) / "ytvis_metric.py"
    assert script.is_file() and script.parent.name == "ytvis_metric"


def test_evaluate_load_from_local_path_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``evaluate.load(<dir>)`` with the Hub switched off and any network connection failing."""
    import evaluate
    import huggingface_hub

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path / "modules")
    monkeypatch.setattr(sys, "path", list(sys.path))  # evaluate appends its modules cache to sys.path
    monkeypatch.setattr(socket.socket, "connect", no_network)
    metric = evaluate.load(YTVIS_METRIC_PATH, annotations=str(GT), cache_dir=str(tmp_path / "data"))
    assert isinstance(metric, evaluate.EvaluationModule) and metric.name == "ytvis_metric"
    for start in range(0, len(RESULTS), 5):
        metric.add_batch(predictions=RESULTS[start : start + 5])
    assert metric.compute() == ytvis_evaluate(GT, RESULTS)


def test_load_ytvis_metric_batches_equal_direct_evaluation() -> None:
    metric = load_ytvis_metric()
    by_video: dict[int, list] = {}
    for entry in RESULTS:
        by_video.setdefault(entry["video_id"], []).append(entry)
    for entries in by_video.values():
        metric.add_batch(predictions=entries)
    in_order = [e for entries in by_video.values() for e in entries]
    assert metric.compute(annotations=GT) == ytvis_evaluate(GT, in_order)
    # single additions, absent frames (None) first, ground truth given at construction
    metric = load_ytvis_metric(annotations=str(GT), max_dets=(1, 5, 10))
    for entry in sorted(RESULTS, key=lambda e: e["segmentations"][0] is not None):
        metric.add(prediction=entry)
    assert metric.compute() == ytvis_evaluate(GT, RESULTS, max_dets=(1, 5, 10))


def test_metric_reports_bad_input() -> None:
    with pytest.raises(ValueError, match="annotations"):
        load_ytvis_metric().compute(predictions=RESULTS[:1])
    with pytest.raises(YTVISFormatError, match=r"predictions\[0\]: missing key\(s\) 'score'"):
        load_ytvis_metric(annotations=GT).add_batch(predictions=[{k: v for k, v in RESULTS[0].items() if k != "score"}])
    metric = load_ytvis_metric(annotations=GT)
    metric.add_batch(predictions=[{**RESULTS[0], "video_id": 999}])
    with pytest.raises(YTVISFormatError, match="unknown video_id 999"):
        metric.compute()


def test_trainer_style_compute_metrics_streams_batches() -> None:
    """``batch_eval_metrics=True`` calls compute_metrics per batch with compute_result on the last one."""
    gt = json.loads(GT.read_text())
    rng = np.random.default_rng(0)
    batches = []
    for v in gt["videos"]:
        masks = np.zeros((2, v["length"], v["height"], v["width"]), dtype=bool)
        for track in masks:
            y, x = rng.integers(0, v["height"] // 2), rng.integers(0, v["width"] // 2)
            track[:, y : y + v["height"] // 2, x : x + v["width"] // 2] = True
        batches.append(SimpleNamespace(predictions=(v["id"], np.array([0.9, 0.4]), np.array([0, 2]), masks)))
    compute_metrics = make_ytvis_compute_metrics(GT, lambda eval_pred: [eval_pred.predictions])
    outputs = [compute_metrics(b, compute_result=i == len(batches) - 1) for i, b in enumerate(batches)]
    assert all(o == {} for o in outputs[:-1])
    expected_results = [e for b in batches for e in _entries(*b.predictions)]
    assert outputs[-1] == flatten_metrics(ytvis_evaluate(GT, expected_results))
    assert "AP-person" in outputs[-1] and all(isinstance(v, float) for v in outputs[-1].values())
    # a second evaluation round starts from scratch
    second = [compute_metrics(b, compute_result=i == len(batches) - 1) for i, b in enumerate(batches)]
    assert second[-1] == outputs[-1]
    # no prediction at all is a defined (zero) score
    empty = make_ytvis_compute_metrics(GT, lambda eval_pred: [])(SimpleNamespace(), compute_result=True)
    assert empty["AP"] == 0.0


def _entries(video_id: int, scores: np.ndarray, labels: np.ndarray, masks: np.ndarray) -> list[dict]:
    return encode_video_predictions(video_id, scores, labels, masks)
