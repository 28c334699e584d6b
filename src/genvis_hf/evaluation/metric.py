"""The YouTube-VIS metric for the Hugging Face ``evaluate`` library (and ``Trainer``'s ``compute_metrics``).

Interface (one *prediction* = one results entry, i.e. one predicted track of one video)::

    metric = load_ytvis_metric(annotations="valid.json")        # or evaluate.load(YTVIS_METRIC_PATH, annotations=...)
    for video_id, out in outputs:                              # out["masks"]: bool [K, T, H, W]
        metric.add_batch(predictions=encode_video_predictions(video_id, out["scores"], out["labels"], out["masks"]))
    metrics = metric.compute()                                 # or metric.compute(annotations=...) if not given above

Each prediction is ``{"video_id": int, "category_id": int (dataset id), "score": float,
"segmentations": [{"size": [H, W], "counts": str} | None] * T}``: masks of different videos have different
sizes and frame counts, so they travel as compressed RLE strings (the ``evaluate`` features are fixed-type
Arrow columns). The ground truth is a whole dataset file, so it is not a per-example ``references`` column:
give it (a path or the loaded dict) to the constructor or to :meth:`~evaluate.EvaluationModule.compute` as
``annotations=``. ``compute`` returns :func:`~genvis_hf.evaluation.ytvis_evaluate`'s dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils.extras import MissingExtraError, missing_extra_message

try:
    import datasets
    import evaluate
except ModuleNotFoundError as error:  # the `evaluate` metric is the [eval] extra's
    raise MissingExtraError(missing_extra_message("the YouTube-VIS `evaluate` metric", error.name, "eval")) from error

from .data import GroundTruthSource
from .errors import YTVISFormatError
from .writer import LabelMap, encode_video_predictions
from .ytvis_eval import DEFAULT_AREA_RANGES, DEFAULT_MAX_DETS, ytvis_evaluate

#: Directory of the ``evaluate`` loading script: ``evaluate.load(YTVIS_METRIC_PATH)`` works offline.
YTVIS_METRIC_PATH = str(Path(__file__).resolve().parent / "ytvis_metric")

_DESCRIPTION = "YouTube-VIS / OVIS video instance segmentation AP and AR, identical to the official evaluator."
_CITATION = """@inproceedings{yang2019video, title={Video Instance Segmentation}, author={Yang, Linjie and Fan,
Yuchen and Xu, Ning}, booktitle={ICCV}, year={2019}}"""
_INPUTS = """
Args:
    predictions: list of results entries {"video_id", "category_id", "score", "segmentations"}, the
        segmentations being per-frame compressed RLE dicts ({"size": [H, W], "counts": str}) or None.
    annotations: ground-truth path or dict (if not given when the metric was created).
    max_dets, area_ranges: as in genvis_hf.evaluation.ytvis_evaluate.
Returns:
    {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl", "per_category_AP"}
"""

_FEATURES = datasets.Features(
    {
        "predictions": {
            "video_id": datasets.Value("int64"),
            "category_id": datasets.Value("int64"),
            "score": datasets.Value("float64"),
            "segmentations": [{"size": [datasets.Value("int64")], "counts": datasets.Value("string")}],
        }
    }
)


# Absent frames are stored as this sentinel: evaluate's input checks cannot handle None inside a list of structs.
_ABSENT_FRAME = {"size": [], "counts": ""}


def _to_stored(entry: Any, name: str) -> Any:
    """Results entry -> Arrow-friendly form (absent frames -> sentinel, bytes counts -> str).

    Raises :class:`YTVISFormatError` for a missing key; other oddities are passed through unchanged, for
    ``evaluate``'s format check (and later :func:`ytvis_evaluate`'s) to report.
    """
    if not isinstance(entry, Mapping):
        raise YTVISFormatError(f"{name}: expected a results entry (dict), got {type(entry).__name__}")
    missing = [k for k in ("video_id", "category_id", "score", "segmentations") if k not in entry]
    if missing:
        raise YTVISFormatError(f"{name}: missing key(s) {', '.join(repr(k) for k in missing)}")
    if not isinstance(entry["segmentations"], list):
        return entry
    frames = []
    for rle in entry["segmentations"]:
        if not rle:
            frames.append(_ABSENT_FRAME)
        elif isinstance(rle, Mapping) and isinstance(rle.get("counts"), bytes):
            frames.append({**rle, "counts": rle["counts"].decode("ascii", errors="replace")})
        else:
            frames.append(rle)
    return {**entry, "segmentations": frames}


def _from_stored(entry: dict[str, Any]) -> dict[str, Any]:
    frames = [None if rle == _ABSENT_FRAME else rle for rle in entry["segmentations"]]
    return {**entry, "segmentations": frames}


class YTVISMetric(evaluate.Metric):
    """``evaluate.Metric`` computing YouTube-VIS / OVIS metrics (see module docstring for the interface).

    Args:
        annotations: ground-truth path or dict; may instead be given to ``compute``.
        max_dets, area_ranges: defaults for ``compute`` (see :func:`~genvis_hf.evaluation.ytvis_evaluate`).
        **kwargs: ``evaluate.EvaluationModule`` options (``keep_in_memory``, ``cache_dir``, ``num_process``...).
    """

    def __init__(
        self,
        annotations: GroundTruthSource | None = None,
        *,
        max_dets: Sequence[int] = DEFAULT_MAX_DETS,
        area_ranges: Mapping[str, tuple[float, float]] = DEFAULT_AREA_RANGES,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.annotations = annotations
        self.max_dets = tuple(max_dets)
        self.area_ranges = dict(area_ranges)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=_FEATURES,
            reference_urls=["https://youtube-vos.org/dataset/vis/"],
        )

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        """Add results entries (a list of dicts, see the module docstring)."""
        if predictions is not None:
            predictions = [_to_stored(p, f"predictions[{i}]") for i, p in enumerate(predictions)]
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """Add one results entry."""
        super().add(prediction=_to_stored(prediction, "prediction"), reference=reference, **kwargs)

    def _compute(
        self,
        predictions: list[dict[str, Any]],
        annotations: GroundTruthSource | None = None,
        max_dets: Sequence[int] | None = None,
        area_ranges: Mapping[str, tuple[float, float]] | None = None,
    ) -> dict[str, Any]:
        ground_truth = annotations if annotations is not None else self.annotations
        if ground_truth is None:
            raise ValueError("YTVISMetric needs the ground truth: pass annotations= to the constructor or to compute()")
        return ytvis_evaluate(
            ground_truth,
            [_from_stored(p) for p in predictions],
            max_dets=self.max_dets if max_dets is None else max_dets,
            area_ranges=self.area_ranges if area_ranges is None else area_ranges,
        )


def load_ytvis_metric(annotations: GroundTruthSource | None = None, **kwargs: Any) -> YTVISMetric:
    """The YouTube-VIS metric, without any Hub access (same class ``evaluate.load(YTVIS_METRIC_PATH)`` gives).

    Predictions are kept in memory unless ``num_process > 1`` or ``keep_in_memory=False`` is passed.
    """
    kwargs.setdefault("keep_in_memory", kwargs.get("num_process", 1) == 1)
    return YTVISMetric(annotations, **kwargs)


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Scalars only, for loggers: ``per_category_AP`` becomes ``AP-<category name>`` keys."""
    flat = {k: float(v) for k, v in metrics.items() if not isinstance(v, Mapping)}
    flat.update({f"AP-{name}": float(v) for name, v in metrics.get("per_category_AP", {}).items()})
    return flat


VideoPrediction = tuple[int, Any, Any, Any]


def make_ytvis_compute_metrics(
    annotations: GroundTruthSource,
    to_video_predictions: Callable[[Any], Iterable[VideoPrediction]],
    *,
    label_to_category_id: LabelMap = None,
    metric: YTVISMetric | None = None,
) -> Callable[..., dict[str, float]]:
    """A ``compute_metrics`` for ``transformers.Trainer``, streaming with ``batch_eval_metrics=True``.

    Args:
        annotations: ground-truth path or dict.
        to_video_predictions: turns one ``EvalPrediction`` into ``(video_id, scores [K], labels [K],
            masks [K, T, H, W] bool)`` tuples, one per video it contains (model-specific post-processing).
        label_to_category_id: see :mod:`~genvis_hf.evaluation.writer` (default ``label + 1``).
        metric: an existing metric to fill (default: :func:`load_ytvis_metric`).

    Returns:
        ``compute_metrics(eval_pred, compute_result=True)``: adds the batch's predictions and, when
        ``compute_result`` is true (the last batch, or the single call without ``batch_eval_metrics``),
        returns :func:`flatten_metrics` of the result; ``{}`` otherwise.
    """
    metric = metric if metric is not None else load_ytvis_metric(annotations)
    state = {"added": 0}

    def compute_metrics(eval_pred: Any, compute_result: bool = True) -> dict[str, float]:
        for video_id, scores, labels, masks in to_video_predictions(eval_pred):
            entries = encode_video_predictions(
                video_id, scores, labels, masks, label_to_category_id=label_to_category_id
            )
            if entries:
                metric.add_batch(predictions=entries)
                state["added"] += len(entries)
        if not compute_result:
            return {}
        if state["added"]:
            result = metric.compute(annotations=annotations)
        else:  # evaluate cannot compute over zero examples; no prediction at all still has a defined score
            result = ytvis_evaluate(annotations, [], max_dets=metric.max_dets, area_ranges=metric.area_ranges)
        state["added"] = 0
        return flatten_metrics(result)

    return compute_metrics
