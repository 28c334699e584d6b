"""Checks of `pixel_values` / `pixel_mask` at the start of a forward, for inputs that would otherwise fail deep
inside the model ("list index out of range" for an empty batch) or silently give wrong results (NaN scores from
NaN pixels; a batch of videos of different sizes whose zero padding is taken for content)."""

from __future__ import annotations

import warnings

import torch


def _content_extent(valid: torch.Tensor) -> tuple[int, int, int]:
    """(frames, rows, cols) up to the last non-zero one of a video's `[T, H, W]` "any channel non-zero" map."""
    extent = []
    for dims in ((1, 2), (0, 2), (0, 1)):
        nonzero = valid.any(dim=dims[1]).any(dim=dims[0]).nonzero()
        extent.append(int(nonzero.max()) + 1 if len(nonzero) else 0)
    return tuple(extent)


def _has_zero_border(video: torch.Tensor) -> bool:
    """Whether some video of `[B, T, 3, H, W]` has an all-zero last frame, last row or last column: what the
    processor's padding leaves (a real frame normalised with the usual mean is never exactly zero)."""
    last_frame = (video[:, -1] == 0).flatten(1).all(dim=1)
    last_row = (video[..., -1, :] == 0).flatten(1).all(dim=1)
    last_column = (video[..., -1] == 0).flatten(1).all(dim=1)
    return bool((last_frame | last_row | last_column).any())


def check_pixel_inputs(pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None) -> None:
    """Raise `ValueError` for an empty batch, no frames, empty frames or non-finite pixels (naming the video and
    frame); warn when `pixel_values` without `pixel_mask` looks zero-padded (a batch of videos of different sizes,
    or frames padded to a multiple of 32).

    Args:
        pixel_values: `[B, T, 3, H, W]` or `[T, 3, H, W]` (other shapes are reported by the caller).
        pixel_mask: `[B, T, H, W]` or None.
    """
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a tensor, got {type(pixel_values).__name__}")
    if pixel_values.dim() not in (4, 5) or pixel_values.shape[-3] != 3:
        return  # not [B, T, 3, H, W]: the caller says so
    video = pixel_values if pixel_values.dim() == 5 else pixel_values.unsqueeze(0)
    shape = tuple(pixel_values.shape)
    for size, what in zip(video.shape, ("no videos (batch size 0)", "no frames", None, "frames of height 0",
                                        "frames of width 0")):  # fmt: skip
        if size == 0 and what is not None:
            raise ValueError(f"pixel_values of shape {shape} has {what}")
    if video.is_floating_point() and not bool(torch.isfinite(video).all()):
        bad = (~torch.isfinite(video)).flatten(2).any(dim=2).nonzero()[0].tolist()
        raise ValueError(
            f"pixel_values has NaN or infinite values (video {bad[0]}, frame {bad[1]} first): the model would give "
            "NaN scores; check the frames and their normalisation"
        )
    if pixel_mask is None and _has_zero_border(video):
        valid = (video != 0).any(dim=2)  # [B, T, H, W]; only computed when a border is zero (rare)
        extents = [_content_extent(valid[b]) for b in range(len(video))]
        full = (video.shape[1], video.shape[3], video.shape[4])
        if all(extent in (full, (0, 0, 0)) for extent in extents):
            return  # all-zero videos (a test pattern, a blank clip): nothing tells padding from content
        sizes = ", ".join(f"video {b}: {'x'.join(map(str, extent))}" for b, extent in enumerate(extents))
        warnings.warn(
            f"pixel_values looks zero-padded (frames x rows x columns up to the last non-zero one: {sizes}; tensor "
            f"{video.shape[1]}x{video.shape[3]}x{video.shape[4]}) but no pixel_mask was given: the padding is "
            "segmented as content and the results differ from those of the unpadded video(s); pass the processor's "
            "pixel_mask",
            stacklevel=4,
        )
