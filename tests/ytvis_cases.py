"""Random YouTube-VIS ground truth / results for the evaluation tests.

The generator deliberately produces the awkward cases of the official evaluator: crowd tracks, frames
where the instance is absent or its mask is empty, the ground-truth segmentation formats (compressed RLE,
uncompressed RLE, polygons, and on request "irregular" compressed RLE with an empty run), several categories
(some without ground truth), tied scores, detections copied from ground truth (IoU exactly 1 and IoU ties),
videos without detections or without ground truth, and ``areas`` values exactly on the small/medium/large
boundaries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

_BOUNDARY_AREAS = (128**2, 256**2, 128**2 - 0.5, 256**2 + 0.5, 0, None)


def moving_box_masks(rng: np.random.Generator, num_frames: int, height: int, width: int) -> np.ndarray:
    """``[T, H, W]`` bool: a box drifting over the frames, absent (all False) in some frames."""
    masks = np.zeros((num_frames, height, width), dtype=bool)
    box_h, box_w = rng.integers(1, height + 1), rng.integers(1, width + 1)
    y, x = rng.integers(0, height - box_h + 1), rng.integers(0, width - box_w + 1)
    for t in range(num_frames):
        if rng.random() < 0.15:
            continue
        dy, dx = rng.integers(-2, 3, size=2)
        y = int(np.clip(y + dy, 0, height - box_h))
        x = int(np.clip(x + dx, 0, width - box_w))
        masks[t, y : y + box_h, x : x + box_w] = True
    return masks


def jitter(rng: np.random.Generator, masks: np.ndarray) -> np.ndarray:
    """A noisy copy of ``masks`` (shifted by up to 2 pixels, a few pixels flipped)."""
    out = np.roll(masks, tuple(rng.integers(-2, 3, size=2)), axis=(1, 2))
    flip = rng.random(out.shape) < 0.02
    return out ^ flip


def compressed(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def uncompressed(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE: run lengths over the column-major pixels, starting with background."""
    flat = mask.T.reshape(-1).astype(np.int8)
    edges = np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]))
    counts = np.diff(edges).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def irregular(mask: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Compressed RLE with a zero-length run inserted (valid, but never written by ``mask.encode``)."""
    counts = uncompressed(mask)["counts"]
    k = int(rng.integers(len(counts)))
    cut = int(rng.integers(counts[k] + 1))
    counts[k : k + 1] = [cut, 0, counts[k] - cut]
    rle = mask_utils.frPyObjects({"size": list(mask.shape), "counts": counts}, *mask.shape)
    return {"size": list(mask.shape), "counts": rle["counts"].decode("ascii")}


def polygon(mask: np.ndarray) -> list[list[float]] | None:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]]


def encode_track(rng: np.random.Generator, masks: np.ndarray, formats: tuple[str, ...]) -> list[Any]:
    """Per-frame segmentations: ``None`` for empty frames (sometimes an empty RLE), else a random format."""
    frames: list[Any] = []
    for mask in masks:
        if not mask.any() and rng.random() < 0.7:
            frames.append(None)
            continue
        kind = formats[rng.integers(len(formats))]
        if kind == "polygon" and mask.any():
            frames.append(polygon(mask))
        elif kind == "uncompressed":
            frames.append(uncompressed(mask))
        elif kind == "irregular":
            frames.append(irregular(mask, rng))
        else:
            frames.append(compressed(mask))
    return frames


def random_case(
    rng: np.random.Generator,
    *,
    max_videos: int = 5,
    max_frames: int = 5,
    large_prob: float = 0.2,
    crowd_prob: float = 0.15,
    gt_formats: tuple[str, ...] = ("compressed", "uncompressed", "polygon"),
    first_ann_id: int = 1,
    result_formats: tuple[str, ...] = ("compressed",),
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A random ``(ground_truth_dict, results_list)`` pair (see module docstring)."""
    num_categories = int(rng.integers(1, 5))
    categories = [{"id": c + 1, "name": f"class{c + 1}", "supercategory": "object"} for c in range(num_categories)]
    videos, annotations, results = [], [], []
    for v in range(int(rng.integers(1, max_videos + 1))):
        big = rng.random() < large_prob
        height, width = (rng.integers(120, 330, size=2) if big else rng.integers(6, 40, size=2)).tolist()
        length = int(rng.integers(1, max_frames + 1))
        video_id = int(v * 3 + rng.integers(1, 3))  # sparse, unordered-looking ids
        videos.append({"id": video_id, "height": height, "width": width, "length": length})
        tracks = []
        for _ in range(int(rng.integers(0, 5))):
            masks = moving_box_masks(rng, length, height, width)
            if tracks and rng.random() < 0.15:
                masks = tracks[int(rng.integers(len(tracks)))][1].copy()  # duplicate ground truth: IoU ties
            category_id = int(rng.integers(1, num_categories + 1))
            areas = [int(m.sum()) if m.any() else None for m in masks]
            if rng.random() < 0.2:
                areas = [a if a is None else _BOUNDARY_AREAS[int(rng.integers(len(_BOUNDARY_AREAS)))] for a in areas]
            annotations.append(
                {
                    "id": first_ann_id + len(annotations),
                    "video_id": video_id,
                    "category_id": category_id,
                    "iscrowd": int(rng.random() < crowd_prob),
                    "segmentations": encode_track(rng, masks, gt_formats),
                    "areas": areas,
                }
            )
            tracks.append((category_id, masks))
        if rng.random() < 0.15:
            continue  # a video without detections
        for _ in range(int(rng.integers(0, 9))):
            if tracks and rng.random() < 0.75:
                category_id, masks = tracks[int(rng.integers(len(tracks)))]
                masks = masks if rng.random() < 0.25 else jitter(rng, masks)
                if rng.random() < 0.15:
                    category_id = int(rng.integers(1, num_categories + 1))  # possibly the wrong class
            else:
                category_id = int(rng.integers(1, num_categories + 1))
                masks = moving_box_masks(rng, length, height, width)
            results.append(
                {
                    "video_id": video_id,
                    "category_id": category_id,
                    "score": float(np.round(rng.random(), 1)),  # coarse scores: many ties
                    "segmentations": [
                        encode_track(rng, m[None], result_formats)[0] if m.any() or rng.random() < 0.5 else None
                        for m in masks
                    ],
                }
            )
    rng.shuffle(results)
    return {"videos": videos, "categories": categories, "annotations": annotations}, results


def mask_area(segmentation: Any, height: int, width: int) -> int:
    """Foreground pixels of one per-frame segmentation in any ground-truth format (0 when absent)."""
    if not segmentation:
        return 0
    if isinstance(segmentation, list):
        return int(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))))
    if isinstance(segmentation["counts"], list):
        return int(mask_utils.area(mask_utils.frPyObjects(segmentation, height, width)))
    return int(mask_utils.area(segmentation))


def visible(annotation: dict[str, Any], ground_truth: dict[str, Any]) -> bool:
    """Whether the track has at least one non-empty mask (an invisible track can never be matched)."""
    video = next(v for v in ground_truth["videos"] if v["id"] == annotation["video_id"])
    return any(mask_area(s, video["height"], video["width"]) for s in annotation["segmentations"])
