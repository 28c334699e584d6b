"""COCO run-length encoding of binary masks (pycocotools), as YouTube-VIS results files store them."""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils


def mask_to_rle(mask: torch.Tensor | np.ndarray) -> dict:
    """Bool `[H, W]` mask -> `{"size": [H, W], "counts": str}` (compressed COCO RLE)."""
    array = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    rle = mask_utils.encode(np.asfortranarray(array.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle
