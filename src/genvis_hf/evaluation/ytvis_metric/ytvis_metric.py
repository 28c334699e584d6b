"""``evaluate`` loading script: ``evaluate.load("<this directory>", annotations="valid.json")``.

The metric lives in :mod:`genvis_hf.evaluation.metric` (documented there); this file only re-exports it so
that the ``evaluate`` library can load it from a local path, offline (``HF_HUB_OFFLINE=1`` is fine).
"""

from genvis_hf.evaluation.metric import YTVISMetric

__all__ = ["YTVISMetric"]
