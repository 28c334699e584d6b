"""Loading and validating YouTube-VIS / OVIS ground truth and results.

Ground truth (YouTube-VIS 2019/2021 and OVIS share this layout)::

    {"videos": [{"id": int, "height": int, "width": int, "length": int, ...}, ...],
     "categories": [{"id": int, "name": str, ...}, ...],
     "annotations": [{"id": int, "video_id": int, "category_id": int, "iscrowd": 0 | 1,
                      "segmentations": [RLE | polygon | None] * T, "areas": [number | None] * T, ...}, ...]}

Results (what GenVIS writes, one entry per predicted track)::

    [{"video_id": int, "category_id": int, "score": float, "segmentations": [RLE | None] * T}, ...]

A video's frame count ``T`` is its ``length`` (else ``len(file_names)``, else the length of the first track
of that video); every annotation and result of the video must have exactly ``T`` segmentations.

Semantics copied from the official ``ytvos.py`` / ``ytvoseval.py``:

* a ground-truth track's area is the mean of the non-zero, non-null values of its ``areas`` field; a
  result's area is the mean of its non-zero per-frame mask areas (0 when it has none);
* ground-truth annotations whose video or category is not listed are ignored (with a warning);
* a result's identity is its position in the results list (ties in score keep that order).

Deviations, all on inputs the official code rejects with an exception or an assertion: results may also use
uncompressed RLE or polygons; an empty results list is allowed (every metric is then 0 where ground truth
exists); unknown video/category ids, wrong frame counts, malformed RLE, duplicate ids and missing keys raise
:class:`~genvis_hf.evaluation.errors.YTVISFormatError` naming the item.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from .errors import YTVISFormatError
from .rle import RLE, measure_rles, normalize_track

PathLike = str | os.PathLike
GroundTruthSource = PathLike | Mapping[str, Any]
ResultsSource = PathLike | Sequence[Mapping[str, Any]]

_ANNOTATION_KEYS = ("id", "video_id", "category_id", "iscrowd", "segmentations", "areas")
_RESULT_KEYS = ("video_id", "category_id", "score", "segmentations")


@dataclass(frozen=True)
class Video:
    """A ground-truth video: ``height``/``width`` in pixels, ``num_frames`` (None until known, see module doc)."""

    id: int
    height: int
    width: int
    num_frames: int | None


@dataclass
class Track:
    """One video-level instance (a ground-truth annotation or a predicted result).

    Attributes:
        video_id, category_id: as in the file.
        rles: ``T`` compressed RLE dicts (``counts`` bytes) or ``None`` for frames without the instance.
        frame_areas: ``[T]`` int64 mask areas in pixels (0 where absent), used for the IoU's union.
        frame_irregular: ``[T]`` bool, RLE with an empty run after the first (see ``rle.RLEStats``).
        avg_area: the area used for the small/medium/large ranges (see module docstring).
        ann_id: ground-truth ``id`` (results: 1-based position in the results list, as ``loadRes`` assigns).
        iscrowd: ground truth only; crowd tracks are ignored regions.
        score: results only.
    """

    video_id: int
    category_id: int
    rles: list[RLE | None]
    frame_areas: np.ndarray
    frame_irregular: np.ndarray
    avg_area: float
    ann_id: int
    iscrowd: bool = False
    score: float = 0.0


@dataclass
class GroundTruth:
    """A parsed ground-truth file.

    Attributes:
        videos: video id -> :class:`Video`.
        categories: category id -> name, in file order.
        tracks: valid annotations in file order.
    """

    videos: dict[int, Video]
    categories: dict[int, str]
    tracks: list[Track] = field(default_factory=list)


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _read_json(path: PathLike, what: str) -> Any:
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_json_from_zip(path)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise YTVISFormatError(f"{what} file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise YTVISFormatError(f"{what} file {path} is not valid JSON: {error}") from None


def _read_json_from_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith(".json") and not n.endswith("/")]
        if len(names) != 1:
            raise YTVISFormatError(f"{path}: a results archive must hold exactly one .json file, found {names}")
        with archive.open(names[0]) as handle:
            return json.load(handle)


def _require_keys(item: Any, keys: Sequence[str], name: str) -> None:
    if not isinstance(item, Mapping):
        raise YTVISFormatError(f"{name}: expected a JSON object, got {type(item).__name__}")
    missing = [k for k in keys if k not in item]
    if missing:
        raise YTVISFormatError(f"{name}: missing key(s) {', '.join(repr(k) for k in missing)}")


def _require_int(item: Mapping[str, Any], key: str, name: str, minimum: int | None = None) -> int:
    value = item[key]
    if not _is_int(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise YTVISFormatError(f"{name}: {key!r} must be an integer{bound}, got {value!r}")
    return int(value)


def _parse_video(item: Any, index: int) -> Video:
    name = f"videos[{index}]"
    _require_keys(item, ("id", "height", "width"), name)
    num_frames = None
    if "length" in item:
        num_frames = _require_int(item, "length", name, minimum=0)
    elif isinstance(item.get("file_names"), list):
        num_frames = len(item["file_names"])
    return Video(
        id=_require_int(item, "id", name),
        height=_require_int(item, "height", name, minimum=1),
        width=_require_int(item, "width", name, minimum=1),
        num_frames=num_frames,
    )


def _parse_segmentations(value: Any, videos: dict[int, Video], video_id: int, name: str) -> list[RLE | None]:
    """Normalise one track's frames; a video without ``length`` takes the frame count of its first track."""
    if not isinstance(value, list):
        raise YTVISFormatError(f"{name}: 'segmentations' must be a list (one entry per frame)")
    video = videos[video_id]
    if video.num_frames is None:
        video = videos[video_id] = replace(video, num_frames=len(value))
    if len(value) != video.num_frames:
        raise YTVISFormatError(
            f"{name}: 'segmentations' has {len(value)} frames but video {video.id} has {video.num_frames} frames"
        )
    return normalize_track(value, video.height, video.width, name)


def _mean_of_truthy(values: Sequence[Any]) -> float:
    """The official ``avg_area``: mean of the truthy (non-zero, non-None) values, 0 if there is none."""
    kept = [v for v in values if v]
    return float(np.array(kept).mean()) if kept else 0.0


def _gt_avg_area(areas: Any, name: str) -> float:
    if not isinstance(areas, list) or not all(
        a is None or (isinstance(a, Real) and not isinstance(a, bool)) for a in areas
    ):
        raise YTVISFormatError(f"{name}: 'areas' must be a list of numbers or nulls (one per frame)")
    return _mean_of_truthy(areas)


def _iscrowd(ann: Mapping[str, Any], name: str) -> bool:
    value = ann["iscrowd"]
    if value not in (0, 1) or not isinstance(value, Integral):
        raise YTVISFormatError(f"{name}: 'iscrowd' must be 0 or 1, got {value!r}")
    return bool(value)


def _load_mapping(source: GroundTruthSource) -> Mapping[str, Any]:
    data = _read_json(source, "ground-truth") if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(data, Mapping):
        raise YTVISFormatError(f"ground truth must be a JSON object, got {type(data).__name__}")
    for key in ("videos", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise YTVISFormatError(f"ground truth: missing or non-list {key!r}")
    return data


def _index_unique(items: Sequence[Any], name: str) -> dict[int, Any]:
    index: dict[int, Any] = {}
    for item in items:
        if item.id in index:
            raise YTVISFormatError(f"ground truth: duplicate {name} id {item.id}")
        index[item.id] = item
    return index


def _parse_categories(raw: list[Any]) -> dict[int, str]:
    categories: dict[int, str] = {}
    for index, item in enumerate(raw):
        name = f"categories[{index}]"
        _require_keys(item, ("id",), name)
        category_id = _require_int(item, "id", name)
        if category_id in categories:
            raise YTVISFormatError(f"ground truth: duplicate category id {category_id}")
        categories[category_id] = str(item.get("name", category_id))
    return categories


def load_ground_truth(source: GroundTruthSource) -> GroundTruth:
    """Parse a YouTube-VIS/OVIS ground-truth file (path) or an already loaded dict.

    The input is never modified. Raises :class:`YTVISFormatError` on malformed content.
    """
    data = _load_mapping(source)
    videos = _index_unique([_parse_video(v, i) for i, v in enumerate(data["videos"])], "video")
    categories = _parse_categories(data["categories"])

    names: list[str] = []
    pending: list[tuple[int, int, int, bool, float]] = []
    frames: list[list[RLE | None]] = []
    seen_ids: set[int] = set()
    skipped = 0
    for index, ann in enumerate(data["annotations"]):
        name = f"annotations[{index}]"
        _require_keys(ann, _ANNOTATION_KEYS, name)
        ann_id = _require_int(ann, "id", name)
        name = f"annotations[{index}] (id={ann_id})"
        if ann_id in seen_ids:
            raise YTVISFormatError(f"{name}: duplicate annotation id")
        seen_ids.add(ann_id)
        video_id = _require_int(ann, "video_id", name)
        category_id = _require_int(ann, "category_id", name)
        if video_id not in videos or category_id not in categories:
            skipped += 1  # the official getAnnIds(vidIds, catIds) filter drops these silently
            continue
        frames.append(_parse_segmentations(ann["segmentations"], videos, video_id, name))
        pending.append((ann_id, video_id, category_id, _iscrowd(ann, name), _gt_avg_area(ann["areas"], name)))
        names.append(name)
    if skipped:
        warnings.warn(
            f"ignored {skipped} ground-truth annotation(s) whose video or category is not listed", stacklevel=2
        )
    if 0 in seen_ids:
        warnings.warn(
            "a ground-truth annotation has id 0: like the official evaluator, detections matched to it are "
            "counted as unmatched (the official code uses the matched id as a flag)",
            stacklevel=2,
        )

    batch = measure_rles(frames, names)
    tracks = [
        Track(
            video_id=v, category_id=c, rles=r, frame_areas=a, frame_irregular=q, avg_area=avg, ann_id=i, iscrowd=crowd
        )
        for (i, v, c, crowd, avg), r, a, q in zip(pending, batch.rles, batch.areas, batch.irregular)
    ]
    return GroundTruth(videos=videos, categories=categories, tracks=tracks)


def _result_score(entry: Mapping[str, Any], name: str) -> float:
    score = entry["score"]
    if not isinstance(score, Real) or isinstance(score, bool) or not math.isfinite(score):
        raise YTVISFormatError(f"{name}: 'score' must be a finite number, got {score!r}")
    return float(score)


def _load_results_list(source: ResultsSource) -> Sequence[Any]:
    data = _read_json(source, "results") if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(data, Sequence) or isinstance(data, (str, bytes, Mapping)):
        raise YTVISFormatError(f"results must be a JSON list of objects, got {type(data).__name__}")
    return data


def load_results(source: ResultsSource, ground_truth: GroundTruth) -> list[Track]:
    """Parse results (a path to a ``.json`` or a CodaLab ``.zip``, or a loaded list) against ``ground_truth``.

    Returns one :class:`Track` per entry, in list order, with ``ann_id`` = 1-based position.
    Raises :class:`YTVISFormatError` naming the entry for unknown video/category ids, frame-count
    mismatches, malformed RLE, non-finite scores or missing keys. The input is never modified.
    """
    entries = _load_results_list(source)
    names: list[str] = []
    pending: list[tuple[int, int, float]] = []
    frames: list[list[RLE | None]] = []
    for index, entry in enumerate(entries):
        name = f"results[{index}]"
        _require_keys(entry, _RESULT_KEYS, name)
        video_id = _require_int(entry, "video_id", name)
        if video_id not in ground_truth.videos:
            raise YTVISFormatError(f"{name}: unknown video_id {video_id} (not in the ground-truth videos)")
        name = f"results[{index}] (video_id={video_id})"
        category_id = _require_int(entry, "category_id", name)
        if category_id not in ground_truth.categories:
            known = ", ".join(str(c) for c in ground_truth.categories)
            raise YTVISFormatError(f"{name}: unknown category_id {category_id} (ground-truth categories: {known})")
        score = _result_score(entry, name)
        frames.append(_parse_segmentations(entry["segmentations"], ground_truth.videos, video_id, name))
        pending.append((video_id, category_id, score))
        names.append(name)

    batch = measure_rles(frames, names)
    return [
        Track(
            video_id=v,
            category_id=c,
            rles=r,
            frame_areas=a,
            frame_irregular=q,
            avg_area=_mean_of_truthy(a.tolist()),
            ann_id=index + 1,
            score=s,
        )
        for index, ((v, c, s), r, a, q) in enumerate(zip(pending, batch.rles, batch.areas, batch.irregular))
    ]
