"""Per-frame segmentations of YouTube-VIS files: parsing, validation and mask areas.

A YouTube-VIS track (a ground-truth annotation or a result entry) stores one segmentation per frame in its
``segmentations`` list. Each element is one of

* ``None`` (or any other "falsy" value such as ``{}``/``[]``): the instance is absent from that frame;
* a compressed RLE ``{"size": [H, W], "counts": "<ascii string>"}`` (COCO's run-length string, column major);
* an uncompressed RLE ``{"size": [H, W], "counts": [int, ...]}``;
* a polygon list ``[[x0, y0, x1, y1, ...], ...]`` (converted with the video's height and width, exactly as
  ``pycocotools.mask.frPyObjects`` followed by ``merge`` does in the official evaluator).

Everything is normalised to compressed RLE dictionaries ``{"size": [H, W], "counts": bytes}`` that
``pycocotools.mask`` accepts. Compressed strings are validated *before* they reach pycocotools (its C parser
reads past the end of a truncated string), with a vectorised numpy decoder of the whole batch that also
yields every mask's area (the number of foreground pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .errors import YTVISFormatError

#: A normalised per-frame segmentation: compressed RLE with ``counts`` as ``bytes``.
RLE = dict[str, Any]

# A run-length in COCO's string format is split in 5-bit groups, one character ('0' + value) per group,
# bit 0x20 meaning "more groups follow" and bit 0x10 of the last group being the sign. A valid count is a
# uint32 stored as a difference of two counts (33 bits + sign), i.e. at most 7 characters.
_MAX_CHARS_PER_COUNT = 7
_UINT32_LIMIT = 1 << 32


def is_absent(segmentation: Any) -> bool:
    """Whether a per-frame segmentation means "instance not in this frame".

    The official evaluator tests ``if segmentation:``, so ``None``, ``{}``, ``[]`` and ``""`` are all absent.
    """
    return not segmentation


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_size(rle: dict, height: int, width: int, where: str) -> None:
    size = rle.get("size")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(_is_int(v) for v in size)
        or (int(size[0]), int(size[1])) != (height, width)
    ):
        raise YTVISFormatError(
            f"{where}: RLE 'size' is {size!r}, expected the video's [height, width] = [{height}, {width}]"
        )


def _counts_to_bytes(counts: str | bytes) -> bytes:
    if isinstance(counts, bytes):
        return counts
    # Non-ASCII characters become bytes >= 0x80, which the batch validation then rejects.
    return counts.encode("utf-8", errors="replace")


def _from_uncompressed(rle: dict, height: int, width: int, where: str) -> RLE:
    counts = rle["counts"]
    if not all(_is_int(c) and 0 <= c < _UINT32_LIMIT for c in counts):
        raise YTVISFormatError(f"{where}: uncompressed RLE 'counts' must be non-negative integers")
    total = sum(int(c) for c in counts)
    if total != height * width:
        raise YTVISFormatError(
            f"{where}: uncompressed RLE 'counts' sum to {total}, expected height*width = {height * width}"
        )
    encoded = mask_utils.frPyObjects({"size": [height, width], "counts": [int(c) for c in counts]}, height, width)
    return {"size": [height, width], "counts": encoded["counts"]}


def _from_polygons(polygons: list, height: int, width: int, where: str) -> RLE:
    if not all(
        isinstance(part, (list, tuple)) and all(_is_number(v) and np.isfinite(v) for v in part) for part in polygons
    ):
        raise YTVISFormatError(f"{where}: a polygon segmentation must be a list of lists of finite numbers")
    try:
        # Same conversion as the official annToRLE (including its handling of 4-number "polygons" as boxes).
        merged = mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width))
    except Exception as error:  # pycocotools raises bare Exceptions for unsupported layouts
        raise YTVISFormatError(f"{where}: invalid polygon segmentation ({error})") from None
    return {"size": [height, width], "counts": merged["counts"]}


def normalize_segmentation(segmentation: Any, height: int, width: int, where: str) -> RLE | None:
    """Convert one per-frame segmentation to a compressed RLE dict (``None`` when absent).

    Args:
        segmentation: ``None``, an RLE dict (compressed or uncompressed) or a polygon list (see module docstring).
        height, width: the video's frame size; an RLE's ``size`` must equal ``[height, width]``.
        where: prefix naming the item in error messages, e.g. ``"results[3] (video_id=7) frame 2"``.

    Returns:
        ``{"size": [height, width], "counts": bytes}`` or ``None``. Compressed strings are *not* validated
        here; pass them through :func:`measure_rles`, which rejects malformed ones.

    Raises:
        YTVISFormatError: wrong type, missing keys, wrong size, bad uncompressed counts or polygons.
    """
    if is_absent(segmentation):
        return None
    if isinstance(segmentation, dict):
        if "size" not in segmentation or "counts" not in segmentation:
            raise YTVISFormatError(f"{where}: an RLE segmentation needs both 'size' and 'counts'")
        _check_size(segmentation, height, width, where)
        counts = segmentation["counts"]
        if isinstance(counts, (str, bytes)):
            return {"size": [height, width], "counts": _counts_to_bytes(counts)}
        if isinstance(counts, (list, tuple)):
            return _from_uncompressed(segmentation, height, width, where)
        raise YTVISFormatError(
            f"{where}: RLE 'counts' must be a string (compressed) or a list of integers, got {type(counts).__name__}"
        )
    if isinstance(segmentation, list):
        return _from_polygons(segmentation, height, width, where)
    raise YTVISFormatError(
        f"{where}: a segmentation must be an RLE dict, a polygon list or null, got {type(segmentation).__name__}"
    )


def _segment_cumsum(values: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``values`` restarted at every change of the (sorted) ``segment_ids``."""
    totals = np.cumsum(values)
    starts = np.flatnonzero(np.concatenate(([True], segment_ids[1:] != segment_ids[:-1])))
    offsets = (totals - values)[starts]
    lengths = np.diff(np.concatenate((starts, [len(values)])))
    return totals - np.repeat(offsets, lengths)


def compressed_rle_areas(strings: Sequence[bytes], num_pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode many COCO compressed RLE strings at once; return their areas and a validity flag.

    This mirrors ``rleFrString`` of pycocotools (5-bit groups, continuation bit 0x20, sign bit 0x10, counts
    after the third stored as the difference to the count two places earlier) with whole-batch numpy ops.

    Args:
        strings: ``n`` compressed ``counts`` strings as bytes.
        num_pixels: ``[n]`` int, the ``height * width`` each string must cover.

    Returns:
        ``(areas, valid)``: ``[n]`` int64 foreground pixel counts (meaningful where valid) and ``[n]`` bool,
        False where a string has a character outside ``'0'..'o'``, ends inside a count, decodes to a negative
        or > uint32 run length, or whose run lengths do not sum to ``num_pixels``.
    """
    n = len(strings)
    num_pixels = np.asarray(num_pixels, dtype=np.int64)
    lengths = np.fromiter((len(s) for s in strings), dtype=np.int64, count=n)
    areas = np.zeros(n, dtype=np.int64)
    valid = (lengths > 0) | (num_pixels == 0)
    if int(lengths.sum()) == 0:
        return areas, valid

    chars = np.frombuffer(b"".join(strings), dtype=np.uint8).astype(np.int64) - 48
    owner = np.repeat(np.arange(n), lengths)
    bad = (chars < 0) | (chars > 63)
    chars[bad] = 0
    more = (chars & 0x20) != 0
    nonempty = lengths > 0
    last_chars = (np.cumsum(lengths) - 1)[nonempty]
    bad[last_chars] |= more[last_chars]  # the string ends in the middle of a count
    group_end = ~more
    group_end[last_chars] = True  # never let a count span two strings

    group_starts = np.flatnonzero(np.concatenate(([True], group_end[:-1])))
    group_of_char = np.cumsum(group_end) - group_end
    position = np.arange(len(chars)) - group_starts[group_of_char]
    bad |= position >= _MAX_CHARS_PER_COUNT
    position = np.minimum(position, _MAX_CHARS_PER_COUNT - 1)
    valid &= np.bincount(owner, weights=bad, minlength=n) == 0

    values = np.add.reduceat((chars & 0x1F) << (5 * position), group_starts)
    group_ends = np.flatnonzero(group_end)
    negative = (chars[group_ends] & 0x10) != 0
    values -= np.where(negative, np.left_shift(1, 5 * (position[group_ends] + 1)), 0)

    group_owner = owner[group_ends]
    groups_per_string = np.bincount(group_owner, minlength=n)
    first_group = np.cumsum(groups_per_string) - groups_per_string
    index_in_string = np.arange(len(values)) - first_group[group_owner]
    counts = values.copy()
    for chain in (index_in_string % 2 == 1, (index_in_string % 2 == 0) & (index_in_string >= 2)):
        members = np.flatnonzero(chain)
        if members.size:
            counts[members] = _segment_cumsum(values[members], group_owner[members])

    out_of_range = (counts < 0) | (counts >= _UINT32_LIMIT)
    valid &= np.bincount(group_owner, weights=out_of_range, minlength=n) == 0
    counts[out_of_range] = 0
    starts = first_group[nonempty]
    totals = np.zeros(n, dtype=np.int64)
    totals[nonempty] = np.add.reduceat(counts, starts)
    areas[nonempty] = np.add.reduceat(np.where(index_in_string % 2 == 1, counts, 0), starts)
    valid &= totals == num_pixels
    return areas, valid


@dataclass
class MaskBatch:
    """Normalised segmentations of several tracks, validated and measured together.

    Attributes:
        rles: per track, a list of ``T`` compressed RLE dicts or ``None``.
        areas: per track, ``[T]`` int64 mask areas (0 where absent).
    """

    rles: list[list[RLE | None]]
    areas: list[np.ndarray]


def measure_rles(tracks: Sequence[Sequence[RLE | None]], names: Sequence[str]) -> MaskBatch:
    """Validate every compressed RLE of ``tracks`` in one batch and compute the per-frame mask areas.

    Args:
        tracks: per track, its normalised per-frame segmentations (output of :func:`normalize_segmentation`).
        names: per track, the prefix used in error messages (e.g. ``"results[4] (video_id=2)"``).

    Raises:
        YTVISFormatError: naming the first track and frame whose compressed RLE is malformed.
    """
    strings: list[bytes] = []
    pixels: list[int] = []
    for frames in tracks:
        for rle in frames:
            if rle is not None:
                strings.append(rle["counts"])
                pixels.append(rle["size"][0] * rle["size"][1])
    areas, valid = compressed_rle_areas(strings, np.asarray(pixels, dtype=np.int64))
    if not valid.all():
        first_bad = int(np.flatnonzero(~valid)[0])
        _raise_malformed(tracks, names, first_bad)

    per_track: list[np.ndarray] = []
    cursor = 0
    for frames in tracks:
        present = np.fromiter((rle is not None for rle in frames), dtype=bool, count=len(frames))
        track_areas = np.zeros(len(frames), dtype=np.int64)
        count = int(present.sum())
        track_areas[present] = areas[cursor : cursor + count]
        cursor += count
        per_track.append(track_areas)
    return MaskBatch(rles=[list(frames) for frames in tracks], areas=per_track)


def _raise_malformed(tracks: Sequence[Sequence[RLE | None]], names: Sequence[str], flat_index: int) -> None:
    seen = 0
    for frames, name in zip(tracks, names):
        for frame, rle in enumerate(frames):
            if rle is None:
                continue
            if seen == flat_index:
                size = rle["size"]
                raise YTVISFormatError(
                    f"{name} frame {frame}: malformed compressed RLE 'counts' (not a valid COCO run-length string "
                    f"covering {size[0]}x{size[1]} pixels)"
                )
            seen += 1
    raise AssertionError("unreachable: malformed RLE index out of range")


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """Encode binary masks of one track as compressed RLE, one per frame, ``counts`` as ``str``.

    Args:
        masks: ``[T, H, W]`` boolean (or 0/1) array.

    Returns:
        ``T`` dicts ``{"size": [H, W], "counts": str}`` (empty frames get a valid all-background RLE, as the
        official GenVIS ``instances_to_coco_json_video`` writes them).
    """
    if masks.ndim != 3:
        raise ValueError(f"expected masks of shape [T, H, W], got {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    fortran = np.asfortranarray(np.transpose(masks.astype(np.uint8, copy=False), (1, 2, 0)))
    encoded = mask_utils.encode(fortran)
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in encoded]
