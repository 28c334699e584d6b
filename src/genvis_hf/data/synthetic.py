"""A synthetic YouTube-VIS-format data set: moving, occluding shapes on textured backgrounds.

Each video has 2-4 objects of 4 categories (circle, square, triangle, cross). Like the classes of a real data set,
a category has a typical look: its shape and a characteristic hue (red, green, blue, yellow), with random
saturation and brightness per object, so neither cue alone is exact. Objects move with constant velocity plus a little jitter, change size
slowly, are drawn back to front (so nearer objects occlude farther ones and the farther one's mask loses the
hidden part), and some enter the frame late or leave it early. Per-frame masks are the visible pixels; a frame
where an instance is not visible has a null segmentation, as in YouTube-VIS.

Layout written to OUT: `JPEGImages/<video>/<frame>.jpg` and `annotations.json` (compressed RLE segmentations).
`genvis-hf make-synthetic OUT --videos N [--seed S]`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

# Characteristic RGB colour of each category (jittered per object).
_HUES = {1: (200, 60, 60), 2: (60, 180, 70), 3: (70, 90, 210), 4: (210, 190, 60)}

CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "cross", "supercategory": "shape"},
]


def _shape_mask(category: int, cx: float, cy: float, size: float, angle: float, height: int, width: int) -> np.ndarray:
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    r = size / 2
    if category == 1:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        if category == 2:
            corners = [(-r, -r), (r, -r), (r, r), (-r, r)]
        elif category == 3:
            corners = [(0, -r * 1.15), (r * 1.1, r * 0.85), (-r * 1.1, r * 0.85)]
        else:
            a, b = r, r * 0.38
            corners = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b),
                       (-a, -b), (-b, -b)]  # fmt: skip
        cos, sin = math.cos(angle), math.sin(angle)
        draw.polygon([(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in corners], fill=255)
    return np.asarray(image) > 127


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base = rng.integers(40, 216, size=3).astype(np.float32)
    gradient = rng.uniform(-40, 40, size=3).astype(np.float32)
    ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None] * gradient
    noise = rng.normal(0, 12, size=(height // 4 + 1, width // 4 + 1, 3)).astype(np.float32)
    noise = np.kron(noise, np.ones((4, 4, 1), dtype=np.float32))[:height, :width]
    return np.clip(base + ramp + noise, 0, 255)


def _make_video(rng: np.random.Generator, height: int, width: int, num_frames: int):
    """Frames uint8 `[T, H, W, 3]` and per object (category id, visible masks `[T, H, W]`)."""
    background = _background(rng, height, width)
    num_objects = int(rng.integers(2, 5))
    scale = min(height, width)
    objects = []
    for _ in range(num_objects):
        size = rng.uniform(0.22, 0.42) * scale
        speed = rng.uniform(0.02, 0.07) * scale
        heading = rng.uniform(0, 2 * math.pi)
        start = (rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height)
        mode = rng.random()
        first, last = 0, num_frames - 1
        if mode < 0.2 and num_frames > 3:  # enters late, from outside the frame
            first = int(rng.integers(1, num_frames // 2 + 1))
            side = rng.integers(4)
            start = [(-size / 2, start[1]), (width + size / 2, start[1]), (start[0], -size / 2),
                     (start[0], height + size / 2)][side]  # fmt: skip
            heading = math.atan2(height / 2 - start[1], width / 2 - start[0]) + rng.uniform(-0.5, 0.5)
            speed = max(speed, 0.06 * scale)
        elif mode < 0.35 and num_frames > 3:  # leaves early
            last = int(rng.integers(num_frames // 2, num_frames - 1))
        category = int(rng.integers(1, len(CATEGORIES) + 1))
        color = np.asarray(_HUES[category], dtype=np.float32) * rng.uniform(0.7, 1.2) + rng.normal(0, 25, size=3)
        objects.append({
            "category": category,
            "color": np.clip(color, 0, 255).astype(np.float32),
            "size": size, "growth": rng.uniform(-0.02, 0.02), "angle": rng.uniform(0, math.pi),
            "spin": rng.uniform(-0.15, 0.15), "x": start[0], "y": start[1],
            "vx": speed * math.cos(heading), "vy": speed * math.sin(heading), "first": first, "last": last,
            "depth": rng.random(),
        })  # fmt: skip

    frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    visible = np.zeros((num_objects, num_frames, height, width), dtype=bool)
    for t in range(num_frames):
        canvas = background.copy()
        covered = np.zeros((height, width), dtype=bool)
        shapes = []
        for o in objects:
            dt = t - o["first"]
            x = o["x"] + o["vx"] * dt + rng.normal(0, 0.004 * scale)
            y = o["y"] + o["vy"] * dt + rng.normal(0, 0.004 * scale)
            size = o["size"] * (1 + o["growth"]) ** dt
            on = o["first"] <= t <= o["last"]
            shapes.append(_shape_mask(o["category"], x, y, size, o["angle"] + o["spin"] * dt, height, width) if on
                          else np.zeros((height, width), dtype=bool))  # fmt: skip
        for index in sorted(range(num_objects), key=lambda i: -objects[i]["depth"]):  # far to near
            shade = objects[index]["color"] * (1 + rng.normal(0, 0.03))
            canvas[shapes[index]] = np.clip(shade, 0, 255)
        for index in sorted(range(num_objects), key=lambda i: objects[i]["depth"]):  # near to far
            visible[index, t] = shapes[index] & ~covered
            covered |= shapes[index]
        frames[t] = np.clip(canvas + rng.normal(0, 4, size=canvas.shape), 0, 255).astype(np.uint8)
    return frames, [(o["category"], visible[i]) for i, o in enumerate(objects)]


def make_synthetic_dataset(output_dir: str | Path, num_videos: int, seed: int = 0, height: int = 120,
                           width: int = 160, min_frames: int = 6, max_frames: int = 10,
                           min_visible_pixels: int = 12, image_format: str = "jpg") -> Path:  # fmt: skip
    """Write a synthetic YouTube-VIS-format data set to `output_dir`; returns the annotations path."""
    output_dir = Path(output_dir)
    (output_dir / "JPEGImages").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    videos, annotations = [], []
    for v in range(num_videos):
        num_frames = int(rng.integers(min_frames, max_frames + 1))
        frames, objects = _make_video(rng, height, width, num_frames)
        name = f"video_{seed:04d}_{v:05d}"
        (output_dir / "JPEGImages" / name).mkdir(exist_ok=True)
        file_names = []
        for t, frame in enumerate(frames):
            file_name = f"{name}/{t:05d}.{image_format}"
            Image.fromarray(frame).save(output_dir / "JPEGImages" / file_name, quality=92)
            file_names.append(file_name)
        video_id = v + 1
        videos.append({"id": video_id, "width": width, "height": height, "length": num_frames,
                       "file_names": file_names})  # fmt: skip
        for category, masks in objects:
            segmentations, areas, boxes = [], [], []
            for mask in masks:
                if mask.sum() < min_visible_pixels:
                    segmentations.append(None), areas.append(None), boxes.append(None)
                    continue
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                segmentations.append(rle)
                areas.append(float(mask.sum()))
                boxes.append([float(b) for b in mask_utils.toBbox(rle)])
            if all(s is None for s in segmentations):
                continue
            annotations.append({
                "id": len(annotations) + 1, "video_id": video_id, "category_id": category, "iscrowd": 0,
                "width": width, "height": height, "length": 1, "segmentations": segmentations,
                "areas": areas, "bboxes": boxes,
            })  # fmt: skip
    path = output_dir / "annotations.json"
    path.write_text(json.dumps({
        "info": {"description": f"genvis_hf synthetic shapes, seed {seed}"}, "licenses": [],
        "categories": CATEGORIES, "videos": videos, "annotations": annotations,
    }))  # fmt: skip
    return path


def add_make_synthetic_command(parser: argparse.ArgumentParser):
    from ..utils.cli_checks import positive_int

    parser.add_argument("output_dir", help="folder to write JPEGImages/ and annotations.json to")
    parser.add_argument("--videos", type=positive_int, default=100, help="number of videos (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; use different seeds for train and test")
    parser.add_argument("--height", type=positive_int, default=120)
    parser.add_argument("--width", type=positive_int, default=160)
    parser.add_argument("--min-frames", type=positive_int, default=6)
    parser.add_argument("--max-frames", type=positive_int, default=10)
    parser.add_argument("--format", choices=["jpg", "png"], default="jpg", help="frame image format")

    def handler(args: argparse.Namespace) -> int:
        from ..utils.cli_checks import UsageError, check_output_dir

        try:
            check_output_dir(args.output_dir, "OUTPUT_DIR")
            if args.min_frames > args.max_frames:
                raise UsageError(f"--min-frames {args.min_frames} is more than --max-frames {args.max_frames}")
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        path = make_synthetic_dataset(args.output_dir, args.videos, seed=args.seed, height=args.height,
                                      width=args.width, min_frames=args.min_frames, max_frames=args.max_frames,
                                      image_format=args.format)  # fmt: skip
        print(f"wrote {args.videos} videos: frames under {Path(args.output_dir) / 'JPEGImages'}, annotations {path}")
        return 0

    return handler


__all__ = ["CATEGORIES", "add_make_synthetic_command", "make_synthetic_dataset"]
