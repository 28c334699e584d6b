"""YouTube-VIS / OVIS annotations (and COCO images as pseudo-videos) as a `datasets.Dataset` of videos.

One row per video: `video_id`, `file_names` (absolute frame paths), `height`, `width`, `length`, `is_image`
(a COCO image standing in for a video), and per instance `instance_ids`, `labels` (contiguous 0-based class
indices), `iscrowd` and `segmentations` (per frame, the JSON text of the annotation's segmentation or "" when the
instance is absent). The table is written by `datasets` to its Arrow cache and memory-mapped; frames are never
decoded here (see `genvis_hf.data.dataset`), so a large data set is not held in memory. The file's layout and
the existence of every frame file are checked first (`genvis_hf.data.checks`): a problem is one
`YTVISFormatError` line naming the item.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ..utils.extras import MissingExtraError, missing_extra_message

try:
    import datasets
except ModuleNotFoundError as error:  # data sets are the [train] / [eval] extras'
    raise MissingExtraError(
        missing_extra_message("genvis_hf.data (training and evaluation data)", "datasets", "train|eval")
    ) from error

FEATURES = datasets.Features(
    {
        "video_id": datasets.Value("int64"),
        "file_names": datasets.Sequence(datasets.Value("string")),
        "height": datasets.Value("int32"),
        "width": datasets.Value("int32"),
        "length": datasets.Value("int32"),
        "is_image": datasets.Value("bool"),
        "instance_ids": datasets.Sequence(datasets.Value("int64")),
        "labels": datasets.Sequence(datasets.Value("int32")),
        "iscrowd": datasets.Sequence(datasets.Value("int8")),
        "segmentations": datasets.Sequence(datasets.Sequence(datasets.Value("string"))),
    }
)


@dataclass
class VideoDataset:
    """A data set of videos: the `datasets.Dataset` of rows and its categories.

    Attributes:
        videos: one row per video (see the module docstring).
        categories: the annotation file's categories, sorted by id; label i is `categories[i]`.
        annotations_path: the JSON file it came from.
    """

    videos: datasets.Dataset
    categories: list[dict[str, Any]]
    annotations_path: str
    images_dir: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id2label(self) -> dict[int, str]:
        return {i: str(c.get("name", c["id"])) for i, c in enumerate(self.categories)}

    @property
    def label_to_category_id(self) -> dict[int, int]:
        return {i: int(c["id"]) for i, c in enumerate(self.categories)}

    def __len__(self) -> int:
        return len(self.videos)


def _categories(data: dict) -> list[dict[str, Any]]:
    categories = sorted(data.get("categories", []), key=lambda c: c["id"])
    if not categories:
        raise ValueError("the annotation file has no categories")
    return categories


def _ytvis_rows(annotations_path: str, images_dir: str, stamp: str = ""):
    data = json.loads(Path(annotations_path).read_text())
    label_of = {c["id"]: i for i, c in enumerate(_categories(data))}
    per_video: dict[int, list[dict]] = {}
    for annotation in data.get("annotations", []):
        per_video.setdefault(annotation["video_id"], []).append(annotation)
    for video in data["videos"]:
        length = int(video.get("length", len(video["file_names"])))
        instances = per_video.get(video["id"], [])
        segmentations = []
        for annotation in instances:
            frames = list(annotation.get("segmentations") or [])
            frames += [None] * (length - len(frames))
            segmentations.append(["" if s is None else json.dumps(s) for s in frames[:length]])
        yield {
            "video_id": int(video["id"]),
            "file_names": [os.path.join(images_dir, name) for name in video["file_names"]],
            "height": int(video["height"]),
            "width": int(video["width"]),
            "length": length,
            "is_image": False,
            "instance_ids": [int(a["id"]) for a in instances],
            "labels": [label_of[a["category_id"]] for a in instances],
            "iscrowd": [int(a.get("iscrowd", 0)) for a in instances],
            "segmentations": segmentations,
        }


def _coco_rows(annotations_path: str, images_dir: str, stamp: str = ""):
    data = json.loads(Path(annotations_path).read_text())
    label_of = {c["id"]: i for i, c in enumerate(_categories(data))}
    per_image: dict[int, list[dict]] = {}
    for annotation in data.get("annotations", []):
        per_image.setdefault(annotation["image_id"], []).append(annotation)
    for image in data["images"]:
        instances = per_image.get(image["id"], [])
        yield {
            "video_id": int(image["id"]),
            "file_names": [os.path.join(images_dir, image["file_name"])],
            "height": int(image["height"]),
            "width": int(image["width"]),
            "length": 1,
            "is_image": True,
            "instance_ids": [int(a["id"]) for a in instances],
            "labels": [label_of[a["category_id"]] for a in instances],
            "iscrowd": [int(a.get("iscrowd", 0)) for a in instances],
            "segmentations": [[json.dumps(a["segmentation"])] for a in instances],
        }


def _build(generator, annotations, images_dir, cache_dir) -> VideoDataset:
    from ..evaluation.errors import YTVISFormatError
    from .checks import check_coco, check_ytvis

    annotations = str(Path(annotations).resolve())
    images_dir = str(Path(images_dir).resolve())
    if not Path(images_dir).is_dir():
        raise YTVISFormatError(f"{images_dir}: the images folder does not exist")
    try:
        with open(annotations) as handle:
            data = json.load(handle)
    except OSError as error:
        raise YTVISFormatError(f"{annotations}: cannot be read ({error.strerror or error})") from error
    except ValueError as error:
        raise YTVISFormatError(f"{annotations}: not valid JSON ({error})") from error
    (check_coco if generator is _coco_rows else check_ytvis)(data, annotations, images_dir)
    categories = _categories(data)
    # `datasets` caches the table under a fingerprint of the generator's arguments: the file's size and
    # modification time are among them, so an annotation file rewritten in place is read again.
    info = os.stat(annotations)
    stamp = f"{info.st_size}-{info.st_mtime_ns}"
    videos = datasets.Dataset.from_generator(
        generator, features=FEATURES, cache_dir=cache_dir,
        gen_kwargs={"annotations_path": annotations, "images_dir": images_dir, "stamp": stamp},
    )  # fmt: skip
    return VideoDataset(videos=videos, categories=categories, annotations_path=annotations, images_dir=images_dir)


def load_ytvis(
    annotations: str | os.PathLike, images_dir: str | os.PathLike, cache_dir: str | None = None
) -> VideoDataset:
    """A YouTube-VIS-format data set (YouTube-VIS 2019/2021, OVIS): `annotations` JSON with `videos` (each with
    `file_names` relative to `images_dir`), `annotations` (per-frame `segmentations`: RLE, compressed RLE,
    polygons or null) and `categories`."""
    return _build(_ytvis_rows, annotations, images_dir, cache_dir)


def load_coco_as_videos(annotations: str | os.PathLike, images_dir: str | os.PathLike,
                        cache_dir: str | None = None) -> VideoDataset:  # fmt: skip
    """A COCO-format image data set whose images become one-frame pseudo-videos (the training sampler turns each
    into a clip of differently augmented copies, as the original's COCO pseudo-videos)."""
    return _build(_coco_rows, annotations, images_dir, cache_dir)


def decode_segmentation(text: str, height: int, width: int) -> np.ndarray:
    """One frame's segmentation (JSON text: RLE with list or string counts, or polygons; "" = absent) as a bool
    `[height, width]` array."""
    if not text:
        return np.zeros((height, width), dtype=bool)
    segmentation = json.loads(text)
    if isinstance(segmentation, list):  # polygons
        if not segmentation:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, *segmentation["size"])
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    mask = mask_utils.decode(rle).astype(bool)
    if mask.shape != (height, width):
        raise ValueError(f"segmentation of size {mask.shape} in a frame of size {(height, width)}")
    return mask


__all__ = ["FEATURES", "VideoDataset", "decode_segmentation", "load_coco_as_videos", "load_ytvis"]
