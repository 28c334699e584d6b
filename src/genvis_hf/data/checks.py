"""Checks of an annotation file and the frame files it lists, made before anything is built from them.

Without them a bad data set fails late and deep: `datasets` raises "Instruction 'train' corresponds to no data"
for a file without videos, an unknown category id is a KeyError inside the Arrow writer, and a missing frame a
FileNotFoundError from a DataLoader worker minutes into training. Each problem here is one
`YTVISFormatError` line naming the file, the item (`videos[3] (id=12)`) and what is wrong; missing frame files
are counted, with the first one named.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..evaluation.errors import YTVISFormatError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(condition: bool, path: str, item: str, problem: str) -> None:
    if not condition:
        raise YTVISFormatError(f"{path}: {item}: {problem}")


def _list_of(data: Mapping, key: str, path: str, required: bool = True) -> list:
    value = data.get(key, None if required else [])
    if not isinstance(value, list):
        raise YTVISFormatError(f"{path}: {key!r} must be a list, got {type(value).__name__}")
    return value


def _category_ids(data: Mapping, path: str) -> set[int]:
    categories = _list_of(data, "categories", path)
    if not categories:
        raise YTVISFormatError(f"{path}: no categories")
    ids = set()
    for index, category in enumerate(categories):
        _require(isinstance(category, Mapping) and _is_int(category.get("id")), path, f"categories[{index}]",
                 "needs an integer 'id'")  # fmt: skip
        _require(category["id"] not in ids, path, f"categories[{index}]", f"duplicate id {category['id']}")
        ids.add(category["id"])
    return ids


def _check_files(found: list[tuple[str, str]], path: str) -> None:
    """`found`: (item name, frame path) pairs; raise naming how many do not exist and the first."""
    missing = [(item, frame) for item, frame in found if not os.path.isfile(frame)]
    if missing:
        item, frame = missing[0]
        more = f" ({len(missing)} frame files missing in all)" if len(missing) > 1 else ""
        raise YTVISFormatError(f"{path}: {item}: frame file {frame} does not exist{more}")


def check_ytvis(data: Any, path: str, images_dir: str) -> None:
    """A YouTube-VIS-format annotation file (already parsed) and the existence of every frame it lists."""
    _require(isinstance(data, Mapping), path, "top level", f"expected a JSON object, got {type(data).__name__}")
    category_ids = _category_ids(data, path)
    videos = _list_of(data, "videos", path)
    if not videos:
        raise YTVISFormatError(f"{path}: no videos")
    lengths: dict[int, int] = {}
    frames: list[tuple[str, str]] = []
    for index, video in enumerate(videos):
        item = f"videos[{index}]"
        _require(isinstance(video, Mapping) and _is_int(video.get("id")), path, item, "needs an integer 'id'")
        item = f"videos[{index}] (id={video['id']})"
        _require(video["id"] not in lengths, path, item, "duplicate video id")
        names = video.get("file_names")
        _require(isinstance(names, list) and len(names) > 0 and all(isinstance(n, str) for n in names), path, item,
                 "'file_names' must be a non-empty list of frame paths")  # fmt: skip
        for key in ("height", "width"):
            _require(_is_int(video.get(key)) and video[key] > 0, path, item, f"{key!r} must be a positive integer")
        length = video.get("length", len(names))
        _require(_is_int(length) and length == len(names), path, item,
                 f"'length' is {length!r} but it lists {len(names)} file_names")  # fmt: skip
        lengths[video["id"]] = length
        frames += [(f"{item} frame {t}", os.path.join(images_dir, name)) for t, name in enumerate(names)]
    for index, annotation in enumerate(_list_of(data, "annotations", path, required=False)):
        item = f"annotations[{index}]"
        _require(isinstance(annotation, Mapping), path, item, "expected a JSON object")
        item = f"annotations[{index}] (id={annotation.get('id')})"
        _require(_is_int(annotation.get("id")), path, item, "needs an integer 'id'")
        _require(annotation.get("iscrowd", 0) in (0, 1), path, item, "'iscrowd' must be 0 or 1")
        _require(annotation.get("video_id") in lengths, path, item,
                 f"unknown video_id {annotation.get('video_id')!r}")  # fmt: skip
        _require(annotation.get("category_id") in category_ids, path, item,
                 f"unknown category_id {annotation.get('category_id')!r}")  # fmt: skip
        segmentations = annotation.get("segmentations") or []
        _require(isinstance(segmentations, list) and len(segmentations) <= lengths[annotation["video_id"]], path,
                 item, f"'segmentations' must be a list of at most the video's {lengths[annotation['video_id']]} "
                       "frames")  # fmt: skip
    _check_files(frames, path)


def check_coco(data: Any, path: str, images_dir: str) -> None:
    """A COCO-format annotation file (already parsed) and the existence of every image it lists."""
    _require(isinstance(data, Mapping), path, "top level", f"expected a JSON object, got {type(data).__name__}")
    category_ids = _category_ids(data, path)
    images = _list_of(data, "images", path)
    if not images:
        raise YTVISFormatError(f"{path}: no images")
    ids: set[int] = set()
    files: list[tuple[str, str]] = []
    for index, image in enumerate(images):
        item = f"images[{index}]"
        _require(isinstance(image, Mapping) and _is_int(image.get("id")) and isinstance(image.get("file_name"), str),
                 path, item, "needs an integer 'id' and a 'file_name'")  # fmt: skip
        _require(image["id"] not in ids, path, f"{item} (id={image['id']})", "duplicate image id")
        ids.add(image["id"])
        files.append((f"{item} (id={image['id']})", os.path.join(images_dir, image["file_name"])))
    for index, annotation in enumerate(_list_of(data, "annotations", path, required=False)):
        item = f"annotations[{index}] (id={annotation.get('id') if isinstance(annotation, Mapping) else None})"
        _require(isinstance(annotation, Mapping) and annotation.get("image_id") in ids, path, item,
                 "unknown or missing image_id")  # fmt: skip
        _require(_is_int(annotation.get("id")), path, item, "needs an integer 'id'")
        _require(annotation.get("iscrowd", 0) in (0, 1), path, item, "'iscrowd' must be 0 or 1")
        _require("segmentation" in annotation, path, item, "needs a 'segmentation'")
        _require(annotation.get("category_id") in category_ids, path, item,
                 f"unknown category_id {annotation.get('category_id')!r}")  # fmt: skip
    _check_files(files, path)


def check_trainable(source) -> None:
    """A training set needs at least one (non-crowd) object instance: without one every step would only learn
    "no object", and the run would end with exit code 0 and a useless model."""
    counts = source.videos.select_columns(["iscrowd"])["iscrowd"]
    instances = sum(sum(1 for crowd in video if not crowd) for video in counts)
    if instances == 0:
        raise YTVISFormatError(f"{Path(source.annotations_path)}: no (non-crowd) annotations in its {len(source)} "
                               "videos: nothing to train on")  # fmt: skip
