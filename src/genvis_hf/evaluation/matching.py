"""Video IoU and the official greedy detection-to-ground-truth matching.

Video IoU between a predicted track ``d`` and a ground-truth track ``g`` of the same video::

    IoU(d, g) = sum_t |d_t & g_t| / sum_t |d_t | g_t|

where an absent frame counts as an empty mask, so frames where both are absent add nothing, a frame where
only one side is present adds that side's area to the union, and IoU is 0 when the union is empty. Crowd
ground truth uses the same definition (the official code does *not* use COCO's ``|d & g| / |d|`` for crowd).

Intersections are computed per frame with ``pycocotools.mask.iou`` in "crowd" mode, which returns
``|d & g| / |d|``; multiplying back by the integer ``|d|`` and rounding gives the exact integer intersection
(relative error of the double division < 1e-15), so sums are exact integers and the final division is the
same float64 operation as the official ``i / u``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from .data import Track


def _present(tracks: Sequence[Track]) -> np.ndarray:
    """``[N, T]`` bool: a segmentation is given (possibly an empty mask) in that frame."""
    return np.array([[rle is not None for rle in t.rles] for t in tracks], dtype=bool).reshape(len(tracks), -1)


def _irregular_overlaps(dets: Sequence[Track], gts: Sequence[Track]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames where both sides are given and one has an irregular RLE: the official merge-based values.

    Returns ``[D, G, T]`` bool mask of those frames, and ``[D, G]`` int64 sums over them of
    ``area(merge(intersect))`` and ``area(merge(union))`` exactly as ``YTVOSeval.computeIoU`` computes them.
    """
    det_present, gt_present = _present(dets), _present(gts)
    det_irregular = np.stack([d.frame_irregular for d in dets])
    gt_irregular = np.stack([g.frame_irregular for g in gts])
    both = det_present[:, None, :] & gt_present[None, :, :]
    special = both & (det_irregular[:, None, :] | gt_irregular[None, :, :])
    inter = np.zeros(special.shape[:2], dtype=np.int64)
    union = np.zeros(special.shape[:2], dtype=np.int64)
    for i, j, t in zip(*np.nonzero(special)):
        pair = [dets[i].rles[t], gts[j].rles[t]]
        inter[i, j] += int(mask_utils.area(mask_utils.merge(pair, intersect=True)))
        union[i, j] += int(mask_utils.area(mask_utils.merge(pair, intersect=False)))
    return special, inter, union


def video_overlaps(dets: Sequence[Track], gts: Sequence[Track]) -> tuple[np.ndarray, np.ndarray]:
    """``[D, G]`` int64 ``(sum_t |d_t & g_t|, sum_t |d_t | g_t|)`` for tracks of one video.

    All tracks must have the same frame count. Frames holding an irregular RLE (see ``rle.RLEStats``) take
    pycocotools' ``merge`` values, as the official code does, since ``merge`` stops early on them.
    """
    shape = (len(dets), len(gts))
    if not dets or not gts:
        return np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    det_areas = np.stack([d.frame_areas for d in dets])  # [D, T]
    gt_areas = np.stack([g.frame_areas for g in gts])  # [G, T]
    irregular = np.stack([d.frame_irregular for d in dets]).any() or np.stack([g.frame_irregular for g in gts]).any()
    special = _irregular_overlaps(dets, gts) if irregular else None
    det_on, gt_on = (det_areas > 0).T.tolist(), (gt_areas > 0).T.tolist()
    det_rles, gt_rles = [d.rles for d in dets], [g.rles for g in gts]
    inter = np.zeros(shape, dtype=np.int64)
    for t in range(det_areas.shape[1]):
        rows = [i for i, on in enumerate(det_on[t]) if on]
        cols = [j for j, on in enumerate(gt_on[t]) if on] if rows else []
        if not cols:
            continue
        ratio = mask_utils.iou([det_rles[i][t] for i in rows], [gt_rles[j][t] for j in cols], [1] * len(cols))
        block = np.rint(ratio * det_areas[rows, t][:, None]).astype(np.int64)
        index = np.ix_(rows, cols)
        if special is not None:
            block[special[0][(*index, t)]] = 0
        inter[index] += block
    union = det_areas.sum(1)[:, None] + gt_areas.sum(1)[None, :] - inter
    if special is None:
        return inter, union
    frames, special_inter, special_union = special  # replace those frames' |d| + |g| by the merge union
    union += special_union - np.einsum("dgt,dt->dg", frames, det_areas) - np.einsum("dgt,gt->dg", frames, gt_areas)
    return inter + special_inter, union


def video_ious(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """``[D, G]`` float64 video IoU from exact integer intersections and unions (0 where the union is 0)."""
    safe = np.where(union > 0, union, 1)
    return np.where(union > 0, inter.astype(np.float64) / safe.astype(np.float64), 0.0)


def _last_argmax(values: np.ndarray) -> np.ndarray:
    """Per row, the index of the *last* maximum (the official loop replaces a match on ``iou >= best``)."""
    return values.shape[1] - 1 - np.argmax(values[:, ::-1], axis=1)


def greedy_match(ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Reproduce ``YTVOSeval.evaluateVid``'s matching, vectorised over the IoU thresholds.

    Args:
        ious: ``[D, G]`` IoU, detections sorted by decreasing score (stable), ground truth in file order.
        gt_ignore: ``[G]`` bool, crowd or outside the area range.
        gt_crowd: ``[G]`` bool; crowd tracks can absorb any number of detections.
        thresholds: ``[T]`` IoU thresholds.

    For each detection in turn and each threshold, the official code scans the ground truth sorted
    "not ignored first" (stable) and keeps the last best candidate with IoU >= threshold that is not already
    taken (crowd is never taken), only falling back to ignored ground truth when no regular one qualifies.

    Returns:
        ``[T, D]`` int64: index (in the *given* ground-truth order) of each detection's match, -1 if none.
    """
    num_dets, num_gts = ious.shape
    num_thresholds = len(thresholds)
    matched = np.full((num_thresholds, num_dets), -1, dtype=np.int64)
    if num_dets == 0 or num_gts == 0:
        return matched
    order = np.argsort(gt_ignore, kind="mergesort")
    num_regular = int(np.count_nonzero(~gt_ignore))
    sorted_ious = ious[:, order]
    reusable = gt_crowd[order]
    floor = np.minimum(thresholds, 1 - 1e-10)[:, None]  # [T, 1]
    taken = np.zeros((num_thresholds, num_gts), dtype=bool)
    rows = np.arange(num_thresholds)
    for d in np.flatnonzero(sorted_ious.max(axis=1) >= floor.min()):
        row = sorted_ious[d][None, :]
        candidate = (row >= floor) & ~(taken & ~reusable)  # [T, G]
        values = np.where(candidate, row, -np.inf)
        choice = np.full(num_thresholds, -1, dtype=np.int64)
        regular = candidate[:, :num_regular].any(axis=1)
        ignored = ~regular & candidate[:, num_regular:].any(axis=1)
        if num_regular:
            choice = np.where(regular, _last_argmax(values[:, :num_regular]), choice)
        if num_regular < num_gts:
            choice = np.where(ignored, num_regular + _last_argmax(values[:, num_regular:]), choice)
        hit = choice >= 0
        taken[rows[hit], choice[hit]] = True
        matched[hit, d] = order[choice[hit]]
    return matched
