"""A compact YouTube-VIS video AP, used only while `genvis_hf.evaluation.ytvis_evaluate` (the evaluation issue's
official-numbers evaluator) is not installed in this tree. Same definitions as the YouTube-VIS API for the
all-area numbers: video IoU = sum_t |d & g| / sum_t |d | g|, greedy matching by score per (video, category) at IoU
.50:.05:.95, 101-point interpolated precision, crowd ground truth ignored (matched detections neither count as
true nor false positives), at most 100 detections per (video, category). Returns AP, AP50, AP75, AR1, AR10, AR100.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALLS = np.linspace(0.0, 1.0, 101)


def _rle(segmentation, height: int, width: int):
    if segmentation is None:
        return None
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width)) if segmentation else None
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    rle = dict(segmentation)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return rle


def _video_iou(det: list, gt: list) -> float:
    inter = union = 0.0
    for d, g in zip(det, gt):
        area_d = float(mask_utils.area(d)) if d is not None else 0.0
        area_g = float(mask_utils.area(g)) if g is not None else 0.0
        i = float(mask_utils.area(mask_utils.merge([d, g], intersect=True))) if d is not None and g is not None else 0.0
        inter += i
        union += area_d + area_g - i
    return inter / union if union > 0 else 0.0


def video_ap(ground_truth, results) -> dict[str, float]:
    gt = json.loads(Path(ground_truth).read_text()) if isinstance(ground_truth, (str, Path)) else ground_truth
    dets = json.loads(Path(results).read_text()) if isinstance(results, (str, Path)) else results
    videos = {v["id"]: v for v in gt["videos"]}
    gts: dict[tuple[int, int], list] = {}
    for a in gt["annotations"]:
        v = videos[a["video_id"]]
        masks = [_rle(s, v["height"], v["width"]) for s in a["segmentations"]]
        gts.setdefault((a["video_id"], a["category_id"]), []).append((masks, bool(a.get("iscrowd", 0))))
    dts: dict[tuple[int, int], list] = {}
    for r in dets:
        v = videos[r["video_id"]]
        masks = [_rle(s, v["height"], v["width"]) for s in r["segmentations"]]
        dts.setdefault((r["video_id"], r["category_id"]), []).append((float(r["score"]), masks))

    categories = sorted({c["id"] for c in gt["categories"]})
    ap = np.full((len(THRESHOLDS), len(categories)), -1.0)
    recall = {m: np.full((len(THRESHOLDS), len(categories)), -1.0) for m in (1, 10, 100)}
    for k, category in enumerate(categories):
        for max_det in (1, 10, 100):
            scores, matched, ignored, num_gt = [], [], [], 0
            for video_id in videos:
                g = gts.get((video_id, category), [])
                d = sorted(dts.get((video_id, category), []), key=lambda x: -x[0])[:max_det]
                num_gt += sum(1 for _, crowd in g if not crowd)
                order = sorted(range(len(g)), key=lambda i: g[i][1])  # regular ground truth first
                g = [g[i] for i in order]
                ious = np.array([[_video_iou(dm, gm) for gm, _ in g] for _, dm in d]).reshape(len(d), len(g))
                crowd = np.array([c for _, c in g], dtype=bool)
                m = np.zeros((len(THRESHOLDS), len(d)), dtype=bool)
                ign = np.zeros((len(THRESHOLDS), len(d)), dtype=bool)
                for t, threshold in enumerate(THRESHOLDS):
                    taken = np.zeros(len(g), dtype=bool)
                    for i in range(len(d)):
                        best, best_iou = -1, min(threshold, 1 - 1e-10)
                        for j in range(len(g)):
                            if taken[j] and not crowd[j]:
                                continue
                            if best > -1 and not crowd[best] and crowd[j]:
                                break
                            if ious[i, j] < best_iou:
                                continue
                            best, best_iou = j, ious[i, j]
                        if best >= 0:
                            taken[best] = True
                            m[t, i] = True
                            ign[t, i] = crowd[best]
                scores += [s for s, _ in d]
                matched.append(m)
                ignored.append(ign)
            if num_gt == 0:
                continue
            order = np.argsort(-np.array(scores), kind="mergesort")
            m = np.concatenate(matched, axis=1)[:, order] if matched else np.zeros((len(THRESHOLDS), 0), bool)
            ign = np.concatenate(ignored, axis=1)[:, order] if ignored else np.zeros((len(THRESHOLDS), 0), bool)
            tps = np.cumsum(m & ~ign, axis=1).astype(float)
            fps = np.cumsum(~m & ~ign, axis=1).astype(float)
            for t in range(len(THRESHOLDS)):
                tp, fp = tps[t], fps[t]
                rc = tp / num_gt
                recall[max_det][t, k] = rc[-1] if len(rc) else 0.0
                if max_det != 100:
                    continue
                pr = (tp / np.maximum(tp + fp, np.spacing(1))).tolist()
                for i in range(len(pr) - 1, 0, -1):
                    pr[i - 1] = max(pr[i - 1], pr[i])
                inds = np.searchsorted(rc, RECALLS, side="left")
                q = [pr[i] if i < len(pr) else 0.0 for i in inds]
                ap[t, k] = float(np.mean(q))

    def mean(x):
        valid = x[x > -1]
        return float(valid.mean()) if valid.size else -1.0

    return {
        "AP": mean(ap), "AP50": mean(ap[0]), "AP75": mean(ap[5]),
        "AR1": mean(recall[1]), "AR10": mean(recall[10]), "AR100": mean(recall[100]),
    }  # fmt: skip
