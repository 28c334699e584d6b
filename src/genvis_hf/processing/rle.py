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
