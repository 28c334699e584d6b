"""Shared helpers of the evaluation tests: fixture location and tiny hand-made YouTube-VIS cases."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The shared fixtures root: ``$GENVIS_SHARED_DIR``, else ``<repo>/../shared``, else ``/work/shared``."""
    candidates = [os.environ.get("GENVIS_SHARED_DIR"), REPO_ROOT.parent / "shared", "/work/shared"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise FileNotFoundError(f"shared fixtures directory not found; tried {candidates}")


def ytvis_fixture_dir() -> Path:
    return shared_dir() / "fixtures" / "genvis_reference" / "ytvis_eval"


def rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE (counts str) of a 2-D bool mask."""
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def box(height: int, width: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def video(video_id: int, height: int, width: int, length: int) -> dict[str, Any]:
    return {"id": video_id, "height": height, "width": width, "length": length}


def gt_track(ann_id: int, video_id: int, category_id: int, masks: list, iscrowd: int = 0) -> dict[str, Any]:
    """A ground-truth annotation; ``masks`` holds 2-D bool arrays or None per frame."""
    return {
        "id": ann_id,
        "video_id": video_id,
        "category_id": category_id,
        "iscrowd": iscrowd,
        "segmentations": [None if m is None else rle(m) for m in masks],
        "areas": [None if m is None else int(m.sum()) for m in masks],
    }


def result(video_id: int, category_id: int, score: float, masks: list) -> dict[str, Any]:
    return {
        "video_id": video_id,
        "category_id": category_id,
        "score": score,
        "segmentations": [None if m is None else rle(m) for m in masks],
    }


def dataset(videos: list, annotations: list, num_categories: int = 2) -> dict[str, Any]:
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, num_categories + 1)]
    return {"videos": videos, "categories": categories, "annotations": annotations}
