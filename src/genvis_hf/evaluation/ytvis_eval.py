"""YouTube-VIS / OVIS video instance segmentation metrics, identical to the official ``ytvoseval.py``.

:func:`ytvis_evaluate` gives the same numbers (to float64 round-off; in practice bit-identical) as::

    gt = YTVOS(gt_json); dt = gt.loadRes(results); E = YTVOSeval(gt, dt, "segm")
    E.params.maxDets = [1, 10, 100]; E.evaluate(); E.accumulate(); E.summarize(); E.stats

i.e. the evaluator shipped with GenVIS, VITA and Mask2Former (``vita/data/datasets/ytvis_api``). The official
steps are reimplemented with numpy (nothing of the original code is used):

1. per (video, category): detections sorted by decreasing score with a *stable* sort (ties keep results-list
   order), truncated to ``max(max_dets)``; video IoU with every ground-truth track (see
   :mod:`~genvis_hf.evaluation.matching`);
2. per (video, category, area range): greedy matching at the ten IoU thresholds ``0.50:0.05:0.95``; crowd
   ground truth and ground truth outside the area range are "ignored" (matching them is neither TP nor FP),
   unmatched detections outside the area range are ignored too;
3. per (category, area range, max detections): the first ``max_det`` detections of every video,
   concatenated in increasing video id order, stably sorted by decreasing score; cumulative TP/FP,
   precision made monotone from the right ("envelope"), sampled at 101 recall points with
   ``searchsorted(recall, thresholds, side="left")`` (points beyond the achieved recall count as 0);
4. AP = mean over thresholds x recall points x categories of the sampled precision, AR = mean over thresholds
   x categories of the final recall, skipping the -1 of categories without (non-ignored) ground truth.

Validated against the original evaluator (GenVIS' ``ytvos.py``/``ytvoseval.py`` run from a scratch copy outside
the repository, never shipped or imported by it), all with max |difference| = 0.0 over the twelve metrics and
the per-category APs: the shared fixture; 3,000 random cases from ``tests/ytvis_cases.py`` (crowd tracks,
absent frames and empty masks, polygon / uncompressed / compressed / irregular RLE, several categories, tied
scores, videos without detections, categories without ground truth, wrong-class detections, ``areas`` on the
range boundaries, ground-truth id 0, ``max_dets`` = (1, 2, 3)); 120 cases with 50-130 extra detections per
video (truncation at 100); 400 cases of full-height column masks written with empty runs (pycocotools'
``merge`` early stop); the hand-made cases of the tests; the 302-video benchmark data set.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .data import GroundTruthSource, ResultsSource, Track, load_ground_truth, load_results
from .matching import greedy_match, video_ious, video_overlaps

#: IoU thresholds .50:.05:.95, computed exactly as the official ``Params`` does.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
#: The 101 recall points 0:.01:1.
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
DEFAULT_MAX_DETS = (1, 10, 100)
#: Area ranges (inclusive bounds) on a track's mean per-frame area: video thresholds 128^2 / 256^2.
DEFAULT_AREA_RANGES: Mapping[str, tuple[float, float]] = {
    "all": (0**2, 1e5**2),
    "small": (0**2, 128**2),
    "medium": (128**2, 256**2),
    "large": (256**2, 1e5**2),
}
_AREA_LABELS = ("all", "small", "medium", "large")
_SUFFIX = {"small": "s", "medium": "m", "large": "l"}


def metric_keys(max_dets: Sequence[int] = DEFAULT_MAX_DETS) -> list[str]:
    """Names of the scalar metrics, in the official ``stats`` order (AR keys follow ``max_dets``)."""
    ar = [f"AR{m}" for m in sorted({int(m) for m in max_dets})]
    return ["AP", "AP50", "AP75", "APs", "APm", "APl", *ar, "ARs", "ARm", "ARl"]


@dataclass
class _PairEval:
    """Official ``evalImgs`` entry for one (video, category, area range), detections sorted by score.

    ``matched``/``ignored`` are ``[T, D]`` bool; ``num_regular_gt`` counts non-ignored ground truth.
    """

    scores: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    num_regular_gt: int


def _check_options(max_dets: Sequence[int], area_ranges: Mapping[str, tuple[float, float]]) -> list[int]:
    dets = sorted({int(m) for m in max_dets})
    if not dets or dets[0] < 1:
        raise ValueError(f"max_dets must hold positive integers, got {list(max_dets)}")
    if set(area_ranges) != set(_AREA_LABELS):
        raise ValueError(f"area_ranges must have exactly the keys {_AREA_LABELS}, got {sorted(area_ranges)}")
    for label, (low, high) in area_ranges.items():
        if not low <= high:
            raise ValueError(f"area range {label!r} has low > high: {(low, high)}")
    return dets


def _sort_by_score(dets: list[Track], limit: int) -> list[Track]:
    order = np.argsort([-d.score for d in dets], kind="mergesort")[:limit]
    return [dets[i] for i in order]


def _evaluate_pair(
    dets: list[Track], gts: list[Track], ious: np.ndarray, ranges: Sequence[tuple[float, float]]
) -> list[_PairEval]:
    """Match one (video, category) in every area range; ``dets`` already sorted and truncated."""
    scores = np.array([d.score for d in dets], dtype=np.float64)
    det_area = np.array([d.avg_area for d in dets], dtype=np.float64)
    gt_area = np.array([g.avg_area for g in gts], dtype=np.float64)
    crowd = np.array([g.iscrowd for g in gts], dtype=bool)
    # The official code stores the matched ground-truth *id* and tests it for truth, so id 0 means "unmatched".
    nonzero_id = np.array([g.ann_id != 0 for g in gts], dtype=bool)
    cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
    out = []
    for low, high in ranges:
        gt_ignore = crowd | (gt_area < low) | (gt_area > high)
        key = gt_ignore.tobytes()
        if key not in cache:
            match = greedy_match(ious, gt_ignore, crowd, IOU_THRESHOLDS)
            hit = match >= 0
            safe = np.where(hit, match, 0)
            matched = hit & nonzero_id[safe] if len(gts) else hit
            cache[key] = (matched, hit & gt_ignore[safe] if len(gts) else hit)
        matched, ignored_by_match = cache[key]
        outside = (det_area < low) | (det_area > high)
        ignored = ignored_by_match | (~matched & outside[None, :])
        out.append(_PairEval(scores, matched, ignored, int(np.count_nonzero(~gt_ignore))))
    return out


def _evaluate_video(
    gts: list[Track], dets: list[Track], ranges: Sequence[tuple[float, float]], max_det: int
) -> dict[int, list[_PairEval]]:
    """All (category, area range) evaluations of one video: category id -> one entry per range."""
    gts_by_cat: dict[int, list[Track]] = defaultdict(list)
    dets_by_cat: dict[int, list[Track]] = defaultdict(list)
    for g in gts:
        gts_by_cat[g.category_id].append(g)
    for d in dets:
        dets_by_cat[d.category_id].append(d)
    dets_by_cat = {c: _sort_by_score(ds, max_det) for c, ds in dets_by_cat.items()}

    both = [c for c in dets_by_cat if c in gts_by_cat]
    rel_dets = [d for c in both for d in dets_by_cat[c]]
    rel_gts = [g for c in both for g in gts_by_cat[c]]
    all_ious = video_ious(*video_overlaps(rel_dets, rel_gts))

    results: dict[int, list[_PairEval]] = {}
    d0 = g0 = 0
    for c in both:
        d1, g1 = d0 + len(dets_by_cat[c]), g0 + len(gts_by_cat[c])
        results[c] = _evaluate_pair(dets_by_cat[c], gts_by_cat[c], all_ious[d0:d1, g0:g1], ranges)
        d0, g0 = d1, g1
    for c in set(gts_by_cat) ^ set(dets_by_cat):
        pair_dets, pair_gts = dets_by_cat.get(c, []), gts_by_cat.get(c, [])
        results[c] = _evaluate_pair(pair_dets, pair_gts, np.zeros((len(pair_dets), len(pair_gts))), ranges)
    return results


def _precision_recall(tps: np.ndarray, fps: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Official accumulation for one setting: ``[T, N]`` score-sorted TP/FP flags -> ``[T, R]``, ``[T]``."""
    tp_sum = np.cumsum(tps, axis=1).astype(np.float64)
    fp_sum = np.cumsum(fps, axis=1).astype(np.float64)
    num_dets = tps.shape[1]
    rc = tp_sum / num_gt
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    recall = rc[:, -1] if num_dets else np.zeros(len(tps))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope
    precision = np.zeros((len(tps), len(RECALL_THRESHOLDS)))
    for t in range(len(tps)):
        idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
        inside = idx < num_dets
        precision[t, inside] = pr[t, idx[inside]]
    return precision, recall


def _accumulate(
    evals: Mapping[int, Sequence[Sequence[_PairEval]]],
    category_ids: Sequence[int],
    num_ranges: int,
    max_dets: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """``precision`` ``[T, R, K, A, M]`` and ``recall`` ``[T, K, A, M]``, -1 where there is no ground truth.

    ``evals[category][area]`` lists the :class:`_PairEval` of every video, in increasing video id order.
    """
    shape = (len(IOU_THRESHOLDS), len(category_ids), num_ranges, len(max_dets))
    precision = -np.ones((shape[0], len(RECALL_THRESHOLDS), *shape[1:]))
    recall = -np.ones(shape)
    for k, category in enumerate(category_ids):
        for a, entries in enumerate(evals.get(category, [[]] * num_ranges)):
            num_gt = sum(e.num_regular_gt for e in entries)
            if num_gt == 0:
                continue
            scores = np.concatenate([e.scores for e in entries])
            rank = np.concatenate([np.arange(len(e.scores)) for e in entries])
            matched = np.concatenate([e.matched for e in entries], axis=1)
            ignored = np.concatenate([e.ignored for e in entries], axis=1)
            for m, max_det in enumerate(max_dets):
                keep = rank < max_det
                order = np.argsort(-scores[keep], kind="mergesort")
                hit, skip = matched[:, keep][:, order], ignored[:, keep][:, order]
                precision[:, :, k, a, m], recall[:, k, a, m] = _precision_recall(hit & ~skip, ~hit & ~skip, num_gt)
    return precision, recall


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _summarize(precision: np.ndarray, recall: np.ndarray, max_dets: Sequence[int]) -> dict[str, float]:
    """The twelve official ``stats`` (AP* and ARs/m/l at the largest ``max_dets``)."""
    area = {label: i for i, label in enumerate(_AREA_LABELS)}
    last = len(max_dets) - 1
    iou50 = np.flatnonzero(IOU_THRESHOLDS == 0.5)
    iou75 = np.flatnonzero(IOU_THRESHOLDS == 0.75)
    metrics = {
        "AP": _mean_valid(precision[:, :, :, area["all"], last]),
        "AP50": _mean_valid(precision[iou50][:, :, :, area["all"], last]),
        "AP75": _mean_valid(precision[iou75][:, :, :, area["all"], last]),
    }
    for label in ("small", "medium", "large"):
        metrics[f"AP{_SUFFIX[label]}"] = _mean_valid(precision[:, :, :, area[label], last])
    for m, max_det in enumerate(max_dets):
        metrics[f"AR{max_det}"] = _mean_valid(recall[:, :, area["all"], m])
    for label in ("small", "medium", "large"):
        metrics[f"AR{_SUFFIX[label]}"] = _mean_valid(recall[:, :, area[label], last])
    return metrics


def _category_names(categories: Mapping[int, str]) -> dict[int, str]:
    names = list(categories.values())
    return {c: (n if names.count(n) == 1 else f"{n} (id {c})") for c, n in categories.items()}


def ytvis_evaluate(
    ground_truth: GroundTruthSource,
    results: ResultsSource,
    *,
    max_dets: Sequence[int] = DEFAULT_MAX_DETS,
    area_ranges: Mapping[str, tuple[float, float]] = DEFAULT_AREA_RANGES,
) -> dict[str, object]:
    """Evaluate video instance segmentation results like the official YouTube-VIS/OVIS evaluator.

    Args:
        ground_truth: path to a YouTube-VIS 2019/2021 or OVIS annotation JSON, or the loaded dict
            (``videos`` with ``height``/``width``/``length``, ``categories``, ``annotations`` with per-frame
            ``segmentations`` as compressed/uncompressed RLE or polygons or ``None``, ``areas``, ``iscrowd``).
        results: path to a results JSON (or a CodaLab ``.zip`` holding one), or the loaded list of
            ``{"video_id", "category_id", "score", "segmentations": [RLE | None] * T}``; ``category_id`` is
            the dataset's id. An empty list is allowed: every metric is then 0 where ground truth exists.
        max_dets: maximum detections per (video, category); AR is reported for each value, every other
            metric at the largest (the official summary hard-codes 100 for "AP": identical for the default).
        area_ranges: inclusive ``(low, high)`` bounds on the mean per-frame area for the keys ``all``,
            ``small``, ``medium``, ``large``.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}`` as floats
        in [0, 1], -1 where the range has no ground truth, plus ``"per_category_AP"``: ``{name: AP}`` (AP at
        all areas and the largest ``max_dets``; -1 for a category without ground truth; a name used by
        several categories gets `` (id N)`` appended).

    Raises:
        YTVISFormatError: malformed input, naming the offending item (see :mod:`~genvis_hf.evaluation.data`).
    """
    dets_limits = _check_options(max_dets, area_ranges)
    ranges = [area_ranges[label] for label in _AREA_LABELS]
    gt = load_ground_truth(ground_truth)
    dets = load_results(results, gt)

    gts_by_video: dict[int, list[Track]] = defaultdict(list)
    dets_by_video: dict[int, list[Track]] = defaultdict(list)
    for g in gt.tracks:
        gts_by_video[g.video_id].append(g)
    for d in dets:
        dets_by_video[d.video_id].append(d)

    evals: dict[int, list[list[_PairEval]]] = defaultdict(lambda: [[] for _ in ranges])
    for video_id in sorted(set(gts_by_video) | set(dets_by_video)):
        per_category = _evaluate_video(gts_by_video[video_id], dets_by_video[video_id], ranges, dets_limits[-1])
        for category, per_range in per_category.items():
            for a, entry in enumerate(per_range):
                evals[category][a].append(entry)

    category_ids = sorted(gt.categories)
    precision, recall = _accumulate(evals, category_ids, len(ranges), dets_limits)
    metrics: dict[str, object] = dict(_summarize(precision, recall, dets_limits))
    names = _category_names(gt.categories)
    metrics["per_category_AP"] = {names[c]: _mean_valid(precision[:, :, k, 0, -1]) for k, c in enumerate(category_ids)}
    return metrics


def format_summary(metrics: Mapping[str, object]) -> str:
    """The scalar metrics as lines in the style of the official ``summarize()`` printout."""
    ar_limits = [int(k[2:]) for k in metrics if k[:2] == "AR" and k[2:].isdigit()]
    largest = max(ar_limits, default=DEFAULT_MAX_DETS[-1])
    areas = {"s": "small", "m": "medium", "l": "large"}
    lines = []
    for key, value in metrics.items():
        if not isinstance(value, float):
            continue
        kind = "Average Precision  (AP)" if key.startswith("AP") else "Average Recall     (AR)"
        tail = key[2:]
        iou = {"50": "0.50", "75": "0.75"}.get(tail, "0.50:0.95") if key.startswith("AP") else "0.50:0.95"
        max_det = int(tail) if key.startswith("AR") and tail.isdigit() else largest
        area = areas.get(tail, "all")
        lines.append(f" {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_det:>3d} ] = {value:0.3f}")
    return "\n".join(lines)
