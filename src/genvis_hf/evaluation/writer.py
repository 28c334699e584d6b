"""Model outputs -> YouTube-VIS results JSON (optionally zipped for the CodaLab servers), streamed to disk.

A results file is a JSON list with one entry per predicted track::

    {"video_id": int, "category_id": int, "score": float,
     "segmentations": [{"size": [H, W], "counts": "<compressed RLE>"}, ...]}   # one per frame

exactly what GenVIS' ``instances_to_coco_json_video`` writes (every frame gets an RLE, empty masks included).

Category ids: models predict 0-based contiguous labels; the results need the *dataset's* ``category_id``.
``label_to_category_id`` maps one to the other: a sequence (``category_id = seq[label]``, e.g. the sorted
category ids of the ground-truth file), a mapping ``{label: category_id}``, or ``None`` for
``category_id = label + 1`` (right for YouTube-VIS 2019/2021 and OVIS, whose ids are 1..K).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ..utils.files import PendingFile
from .rle import encode_masks

LabelMap = Sequence[int] | Mapping[int, int] | None
#: Name of the JSON file inside a CodaLab submission archive.
ARCHIVE_MEMBER = "results.json"


def _to_numpy(value: Any) -> np.ndarray:
    """numpy view of a numpy array, torch tensor (any device) or nested list, without importing torch."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def map_label(label: int, label_to_category_id: LabelMap) -> int:
    """The dataset category id of a 0-based contiguous ``label`` (see module docstring)."""
    if label_to_category_id is None:
        return int(label) + 1
    try:
        return int(label_to_category_id[label])
    except (IndexError, KeyError):
        raise ValueError(f"label {label} has no entry in label_to_category_id") from None


def _is_rle_track(track: Any) -> bool:
    return isinstance(track, (list, tuple)) and all(s is None or isinstance(s, Mapping) for s in track)


def _rle_track(track: Sequence[Mapping[str, Any] | None]) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for rle in track:
        if rle is None:
            out.append(None)
            continue
        counts = rle["counts"]
        text = counts.decode("ascii") if isinstance(counts, bytes) else counts
        out.append({"size": [int(v) for v in rle["size"]], "counts": text})
    return out


def encode_track(track: Any) -> list[dict[str, Any] | None]:
    """One track's per-frame segmentations: ``[T, H, W]`` bool array/tensor, or already a list of RLE/None."""
    if _is_rle_track(track):
        return _rle_track(track)
    masks = _to_numpy(track)
    if masks.ndim != 3:
        raise ValueError(f"a track's masks must have shape [T, H, W], got {tuple(masks.shape)}")
    if masks.dtype != bool and not np.issubdtype(masks.dtype, np.integer):
        raise ValueError(f"masks must be boolean or 0/1 integers (threshold them first), got dtype {masks.dtype}")
    return encode_masks(masks != 0)


def encode_video_predictions(
    video_id: int,
    scores: Any,
    labels: Any,
    masks: Any,
    *,
    label_to_category_id: LabelMap = None,
) -> list[dict[str, Any]]:
    """Build the results entries of one video.

    Args:
        video_id: the ground-truth video id.
        scores: ``[K]`` floats (numpy, torch or list).
        labels: ``[K]`` 0-based contiguous class indices.
        masks: ``[K, T, H, W]`` bool (or 0/1 integer) numpy array or torch tensor (any device, converted one track at
            a time), or a length-``K`` sequence whose items are ``[T, H, W]`` arrays or lists of ``T`` RLE
            dicts / ``None``.
        label_to_category_id: see module docstring.

    Returns:
        ``K`` dicts ``{"video_id", "score", "category_id", "segmentations"}`` with ``counts`` as ``str``.
    """
    score_list = _to_numpy(scores).reshape(-1).tolist()
    label_list = _to_numpy(labels).reshape(-1).tolist()
    if len(score_list) != len(label_list) or len(score_list) != len(masks):
        raise ValueError(
            f"video {video_id}: got {len(score_list)} scores, {len(label_list)} labels and {len(masks)} mask tracks"
        )
    return [
        {
            "video_id": int(video_id),
            "score": float(score),
            "category_id": map_label(int(label), label_to_category_id),
            "segmentations": encode_track(masks[k]),
        }
        for k, (score, label) in enumerate(zip(score_list, label_list))
    ]


class YTVISResultsWriter:
    """Stream results to a YouTube-VIS results JSON (or CodaLab ``.zip``), atomically.

    Each :meth:`add_video` call encodes that video's masks and appends its entries to a temporary file next
    to ``path`` (flushed, so memory holds one video at a time). :meth:`close` (or leaving the ``with`` block
    normally) finishes the JSON list and names it ``path`` in one step; with ``zip=True`` it first stores it
    as ``results.json`` at the root of a deflated archive, itself written to a temporary file. If the ``with``
    block raises, or :meth:`abort` is called, the temporary files are discarded and ``path`` is left
    untouched: a results file is never half-written. The temporary files have no name until then
    (``genvis_hf.utils.files.PendingFile``), so a killed process leaves nothing either.

    Example::

        with YTVISResultsWriter("submission.zip", zip=True) as writer:
            for video_id, out in predictions:        # out["masks"]: bool [K, T, H, W]
                writer.add_video(video_id, out["scores"], out["labels"], out["masks"])

    Args:
        path: final file (``.json``, or the archive when ``zip=True``).
        zip: write a CodaLab submission archive holding ``results.json``.
        label_to_category_id: maps model labels to dataset category ids (default ``label + 1``).
    """

    def __init__(self, path: str | os.PathLike, *, zip: bool = False, label_to_category_id: LabelMap = None):
        self.path = Path(path)
        self.zip = zip
        self.label_to_category_id = label_to_category_id
        self.num_results = 0
        self.num_videos = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pending: PendingFile | None = PendingFile(self.path.parent, name_hint=self.path.name, suffix=".json")
        self.temporary_path: Path | None = self._pending.path
        self._zip_pending: PendingFile | None = None
        self._file = os.fdopen(self._pending.fileno(), "w", encoding="utf-8", closefd=False)
        self._file.write("[")

    def __enter__(self) -> YTVISResultsWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def closed(self) -> bool:
        return self.temporary_path is None

    def add_video(self, video_id: int, scores: Any, labels: Any, masks: Any) -> int:
        """Encode and append one video's predictions (see :func:`encode_video_predictions`); returns ``K``."""
        entries = encode_video_predictions(
            video_id, scores, labels, masks, label_to_category_id=self.label_to_category_id
        )
        self.add_results(entries)
        self.num_videos += 1
        return len(entries)

    def add_results(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Append already formatted results entries (``category_id`` = dataset id); returns how many."""
        if self.closed:
            raise RuntimeError("YTVISResultsWriter is closed")
        count = 0
        for entry in entries:
            self._file.write(("," if self.num_results else "") + "\n")
            json.dump(entry, self._file, separators=(",", ":"))
            self.num_results += 1
            count += 1
        self._file.flush()
        return count

    def close(self) -> Path:
        """Finish the file and give it the name :attr:`path` atomically; returns :attr:`path`."""
        if self.closed:
            return self.path
        try:
            self._file.write("\n]\n")
            self._file.close()
            final = self._zip(self.temporary_path) if self.zip else self._pending
            final.publish(self.path)  # flushed to disk, permissions of a new file, then named
        except BaseException:
            self.abort()
            raise
        self._pending.discard()
        self._pending = self._zip_pending = None
        self.temporary_path = None
        return self.path

    def _zip(self, json_path: Path) -> PendingFile:
        self._zip_pending = PendingFile(self.path.parent, name_hint=self.path.name, suffix=".zip")
        with zipfile.ZipFile(self._zip_pending.path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.write(json_path, arcname=ARCHIVE_MEMBER)
        return self._zip_pending

    def abort(self) -> None:
        """Discard everything written so far; :attr:`path` is not created or changed."""
        if self.closed:
            return
        self._file.close()
        for pending in (self._pending, self._zip_pending):
            if pending is not None:
                pending.discard()
        self._pending = self._zip_pending = None
        self.temporary_path = None
