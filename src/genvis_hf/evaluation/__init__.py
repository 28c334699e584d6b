"""YouTube-VIS / OVIS evaluation with the official evaluator's numbers (see ``docs/evaluation.md``)."""

from .errors import YTVISFormatError
from .ytvis_eval import DEFAULT_AREA_RANGES, DEFAULT_MAX_DETS, format_summary, metric_keys, ytvis_evaluate

__all__ = [
    "DEFAULT_AREA_RANGES",
    "DEFAULT_MAX_DETS",
    "YTVISFormatError",
    "format_summary",
    "metric_keys",
    "ytvis_evaluate",
]
