"""YouTube-VIS / OVIS evaluation giving the official evaluator's numbers (see ``docs/evaluation.md``).

Importing this package does not import torch, ``evaluate`` or ``datasets``; the metric helpers
(``load_ytvis_metric``, ``YTVISMetric``, ``make_ytvis_compute_metrics``, ``YTVIS_METRIC_PATH``) are loaded
on first access.
"""

from typing import Any

from .errors import YTVISFormatError
from .writer import YTVISResultsWriter, encode_video_predictions
from .ytvis_eval import DEFAULT_AREA_RANGES, DEFAULT_MAX_DETS, format_summary, metric_keys, ytvis_evaluate

_METRIC_NAMES = (
    "YTVISMetric",
    "YTVIS_METRIC_PATH",
    "flatten_metrics",
    "load_ytvis_metric",
    "make_ytvis_compute_metrics",
)

__all__ = [
    "DEFAULT_AREA_RANGES",
    "DEFAULT_MAX_DETS",
    "YTVISFormatError",
    "YTVISResultsWriter",
    "encode_video_predictions",
    "format_summary",
    "metric_keys",
    "ytvis_evaluate",
    *_METRIC_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _METRIC_NAMES:
        from . import metric

        return getattr(metric, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
