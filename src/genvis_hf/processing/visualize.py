"""Overlays: each instance drawn in one colour on every frame (stable across the video), filled
translucently, outlined, and labelled with its class name and score."""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont


def instance_colors(count: int) -> list[tuple[int, int, int]]:
    """`count` well separated RGB colours (golden-ratio hue steps), the same for the same index every time."""
    colors = []
    for index in range(count):
        hue = (0.13 + index * 0.618033988749895) % 1.0
        red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
        colors.append((int(red * 255), int(green * 255), int(blue * 255)))
    return colors


def _outline(mask: torch.Tensor) -> torch.Tensor:
    """Boundary pixels (2 px) of a bool `[H, W]` mask."""
    inside = -F.max_pool2d(-mask[None, None].float(), kernel_size=5, stride=1, padding=2)[0, 0] > 0.5
    return mask & ~inside


def draw_instances(
    frame: np.ndarray,
    masks: torch.Tensor,
    captions: list[str],
    colors: list[tuple[int, int, int]],
    alpha: float = 0.45,
) -> np.ndarray:
    """Draw bool masks `[K, H, W]` on an RGB uint8 frame `[H, W, 3]` (same size); returns a new frame."""
    canvas = torch.from_numpy(np.array(frame, dtype=np.float32))  # a writable copy: frames may be read-only views
    for mask, color in zip(masks, colors):
        if not mask.any():
            continue
        tint = torch.tensor(color, dtype=torch.float32)
        canvas[mask] = canvas[mask] * (1 - alpha) + tint * alpha
        canvas[_outline(mask)] = tint
    image = Image.fromarray(canvas.clamp(0, 255).round().to(torch.uint8).numpy())
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for mask, caption, color in zip(masks, captions, colors):
        if not mask.any():
            continue
        rows, cols = torch.nonzero(mask, as_tuple=True)
        x, y = int(cols.min()), int(rows.min())
        left, top, right, bottom = draw.textbbox((x, y), caption, font=font)
        y = max(y - (bottom - top) - 4, 0)
        left, top, right, bottom = draw.textbbox((x + 2, y + 1), caption, font=font)
        draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=color)
        draw.text((x + 2, y + 1), caption, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def overlay_video(frames: Iterable[np.ndarray], segmentation, score_threshold: float = 0.5) -> Iterator[np.ndarray]:
    """Overlay a `VideoSegmentation` on its frames (any size: masks are resized to the frame), keeping
    instances scoring at least `score_threshold`. Yields RGB uint8 frames."""
    keep = [i for i, score in enumerate(segmentation.scores.tolist()) if score >= score_threshold]
    colors = instance_colors(len(segmentation.scores))
    captions = [
        f"{segmentation.label_names[int(segmentation.labels[i])]} {float(segmentation.scores[i]):.2f}" for i in keep
    ]
    for index, frame in enumerate(frames):
        if index >= segmentation.num_frames:
            break
        frame = frame if frame.dtype == np.uint8 else np.clip(frame, 0, 255).astype(np.uint8)
        masks = segmentation.frame_masks(index)[keep]  # [K, h, w]
        if masks.shape[-2:] != frame.shape[:2]:
            masks = F.interpolate(masks[None].float(), size=frame.shape[:2], mode="nearest")[0].bool()
        yield draw_instances(frame, masks, captions, [colors[i] for i in keep])
