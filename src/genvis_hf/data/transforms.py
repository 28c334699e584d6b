"""Clip sampling and per-clip augmentations, as the original GenVIS/VITA data pipeline.

- `sample_frame_indices`: a reference frame uniformly at random, the other `num_frames - 1` frames drawn with
  replacement from the `frame_range` frames on either side of it, sorted (`INPUT.SAMPLING_FRAME_NUM/RANGE`).
- `ClipAugmentation`: one random decision per clip ("*_by_clip"): with probability `crop_prob` a random crop of
  `crop_fraction` of each side, a resize of the short edge to a size chosen from `min_sizes` (long edge capped at
  `max_size`), and a horizontal flip with probability `flip_prob`. Frames are resized with PIL bilinear (as
  detectron2), masks with nearest neighbour.

Every random choice comes from the `numpy.random.Generator` passed in, so a sample is a function of its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..processing.video_processing_genvis import resized_shape


def sample_frame_indices(length: int, num_frames: int, frame_range: int, rng: np.random.Generator) -> list[int]:
    """Sorted indices of `num_frames` frames of a `length`-frame video (repeats possible, as the original)."""
    reference = int(rng.integers(length))
    start, end = max(0, reference - frame_range), min(length, reference + frame_range + 1)
    candidates = [i for i in range(start, end) if i != reference]
    if not candidates:
        return [reference] * num_frames
    chosen = rng.choice(np.asarray(candidates), num_frames - 1).tolist()
    return sorted([*chosen, reference])


def default_train_sizes(test_min_size: int) -> list[int]:
    """Short-edge sizes for training around the test size, like the original's (288..512 for test size 360):
    0.8x to 1.2x of `test_min_size` in 5 steps, multiples of 8."""
    return sorted({max(32, round(test_min_size * r / 8) * 8) for r in (0.8, 0.9, 1.0, 1.1, 1.2)})


@dataclass
class ClipAugmentation:
    min_sizes: Sequence[int] = (288, 320, 352, 384, 416, 448, 480, 512)
    max_size: int = 768
    flip_prob: float = 0.5
    crop_prob: float = 0.5
    crop_fraction: tuple[float, float] = (0.6, 1.0)

    def __call__(self, frames: list[np.ndarray], masks: torch.Tensor, rng: np.random.Generator,
                 per_frame: bool = False):  # fmt: skip
        """frames: T uint8 `[H, W, 3]` arrays; masks: bool `[N, T, H, W]`. Returns (uint8 `[T, 3, H', W']`,
        bool `[N, T, H', W']`). `per_frame` draws each frame's crop/resize/flip independently (pseudo-videos
        made from one image)."""
        height, width = frames[0].shape[:2]
        short = int(self.min_sizes[int(rng.integers(len(self.min_sizes)))])
        flip = rng.random() < self.flip_prob
        # One crop window for the clip; a pseudo-video (`per_frame`) gets one per frame, each resized to the
        # size of the whole frame's resize, which makes the copies move and zoom against each other.
        windows = [self._crop_window(height, width, rng) for _ in (frames if per_frame else frames[:1])]
        if per_frame:
            new_h, new_w = resized_shape(height, width, short, self.max_size)
        else:
            new_h, new_w = resized_shape(windows[0][2], windows[0][3], short, self.max_size)

        resized, resized_masks = [], []
        for t, frame in enumerate(frames):
            top, left, crop_h, crop_w = windows[t if per_frame else 0]
            image = Image.fromarray(np.ascontiguousarray(frame[top : top + crop_h, left : left + crop_w]))
            array = np.asarray(image.resize((new_w, new_h), Image.BILINEAR))
            resized.append(torch.from_numpy(np.array(array)).permute(2, 0, 1))
            frame_masks = masks[:, t : t + 1, top : top + crop_h, left : left + crop_w]
            if frame_masks.numel():
                frame_masks = F.interpolate(frame_masks.float(), size=(new_h, new_w), mode="nearest") > 0.5
            else:
                frame_masks = torch.zeros((masks.shape[0], 1, new_h, new_w), dtype=torch.bool)
            resized_masks.append(frame_masks)
        video = torch.stack(resized)
        masks = torch.cat(resized_masks, dim=1)
        if flip:
            video, masks = video.flip(-1), masks.flip(-1)
        return video, masks

    def _crop_window(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        if rng.random() >= self.crop_prob:
            return 0, 0, height, width
        crop_h = max(1, round(height * rng.uniform(*self.crop_fraction)))
        crop_w = max(1, round(width * rng.uniform(*self.crop_fraction)))
        return int(rng.integers(height - crop_h + 1)), int(rng.integers(width - crop_w + 1)), crop_h, crop_w


__all__ = ["ClipAugmentation", "default_train_sizes", "sample_frame_indices"]
