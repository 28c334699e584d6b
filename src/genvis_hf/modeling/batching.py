"""Batches of videos of different sizes and lengths: what is real in each, how they are grouped, and how the
groups' outputs are put back into one padded batch.

The original has no padding mask: zero padding changes convolutions, group norm, position encodings and deformable
sampling, so a video padded up to a larger one would give a different result. Videos are therefore grouped by
(frames, size padded to `size_divisibility`) and each group runs at its own size; the outputs are padded afterwards.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def video_extents(pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None) -> list[tuple[int, int, int]]:
    """Per video: (length, height, width) of the real content, from `pixel_mask` `[B, T, H, W]` (everything is
    real without one)."""
    batch, num_frames, _, height, width = pixel_values.shape
    if pixel_mask is None:
        return [(num_frames, height, width)] * batch
    if pixel_mask.shape != (batch, num_frames, height, width):
        raise ValueError(
            f"pixel_mask has shape {tuple(pixel_mask.shape)}, expected {(batch, num_frames, height, width)} "
            "([batch, frames, height, width], matching pixel_values)"
        )
    extents = []
    valid = pixel_mask.bool()
    for b in range(batch):
        frames_valid = valid[b].flatten(1).any(1)
        length = int(frames_valid.sum())
        if length == 0:
            raise ValueError(f"video {b} of the batch has no valid frame in pixel_mask")
        if not bool(frames_valid[:length].all()):
            raise ValueError(f"video {b}: pixel_mask marks a padding frame before a valid one")
        rows = valid[b, :length].any(0).any(1)
        cols = valid[b, :length].any(0).any(0)
        extents.append((length, int(rows.nonzero().max()) + 1, int(cols.nonzero().max()) + 1))
    return extents


def round_up(size: int, divisor: int) -> int:
    return math.ceil(size / divisor) * divisor


def group_videos(extents: list[tuple[int, int, int]], divisor: int,
                 batch_size: tuple[int, int] | None = None) -> dict[tuple[int, int, int], list[int]]:  # fmt: skip
    """(length, padded height, padded width) -> indices of the videos run together at that size. With
    `batch_size` (training) every video is padded to the batch's (padded) size, as the original trains: one group
    per video length, so every process of a distributed run makes the same loss calls."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for index, (length, height, width) in enumerate(extents):
        if batch_size is not None:
            key = (length, *batch_size)
        else:
            key = (length, round_up(height, divisor), round_up(width, divisor))
        groups.setdefault(key, []).append(index)
    return groups


def pad_to(tensor: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Zero-pad the trailing dims of `tensor` (at the end of each dim) up to `size`."""
    pad = []
    for current, target in zip(reversed(tensor.shape[-len(size) :]), reversed(size)):
        pad += [0, target - current]
    return F.pad(tensor, pad) if any(pad) else tensor


def stack_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack tensors of equal rank, zero-padding every dim to the largest (a view for a single tensor)."""
    if len(tensors) == 1:
        return tensors[0].unsqueeze(0)
    size = [max(t.shape[d] for t in tensors) for d in range(tensors[0].dim())]
    return torch.stack([pad_to(t, size) for t in tensors])


def concatenate_frames(tensors: list[torch.Tensor]) -> torch.Tensor:
    """`torch.cat(tensors)` along dim 0, as a view when the tensors already lie one after the other in one
    contiguous block of memory (e.g. frames written into slices of one video-wide tensor), else a copy."""
    first = tensors[0]
    offset = first.storage_offset()
    for t in tensors:
        adjacent = (
            t.is_contiguous() and t.shape[1:] == first.shape[1:] and t.storage_offset() == offset
            and t.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
        )  # fmt: skip
        if not adjacent:
            return torch.cat(tensors)
        offset += t.numel()
    size = (sum(t.shape[0] for t in tensors), *first.shape[1:])
    return first.as_strided(size, (math.prod(first.shape[1:]), *first.stride()[1:]), first.storage_offset())
