"""COCO run-length encoding of binary masks, as YouTube-VIS results files store them (one encoder for the
whole package: `genvis_hf.evaluation.rle.encode_masks`)."""

from __future__ import annotations

import numpy as np
import torch

from ..evaluation.rle import encode_masks


def masks_to_rle(masks: torch.Tensor | np.ndarray) -> list[dict]:
    """Bool `[T, H, W]` masks of one instance -> `T` dicts `{"size": [H, W], "counts": str}`."""
    array = masks.cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    return encode_masks(array)


def decode_masks(segmentations: list[dict]) -> torch.Tensor:
    """One instance's per-frame COCO RLEs (the pipeline's `segmentations`, a results file's entry) -> bool
    `[T, H, W]`. Decode only what you need: a long video's dense masks are large (T x H x W bytes per instance)."""
    from pycocotools import mask as mask_utils

    if not segmentations:
        return torch.zeros((0, 0, 0), dtype=torch.bool)
    rles = [{"size": s["size"], "counts": s["counts"].encode() if isinstance(s["counts"], str) else s["counts"]}
            for s in segmentations]  # fmt: skip
    return torch.from_numpy(mask_utils.decode(rles)).permute(2, 0, 1).bool()
