"""Per-frame segmentations of YouTube-VIS files: parsing, validation and mask areas.

A YouTube-VIS track (a ground-truth annotation or a result entry) stores one segmentation per frame in its
``segmentations`` list. Each element is one of

* ``None`` (or any other "falsy" value such as ``{}``/``[]``): the instance is absent from that frame;
* a compressed RLE ``{"size": [H, W], "counts": "<ascii string>"}`` (COCO's run-length string, column major);
* an uncompressed RLE ``{"size": [H, W], "counts": [int, ...]}``;
* a polygon list ``[[x0, y0, x1, y1, ...], ...]`` (converted with the video's height and width, exactly as
  ``pycocotools.mask.frPyObjects`` followed by ``merge`` does in the official evaluator).

Everything is normalised to compressed RLE dictionaries ``{"size": [H, W], "counts": str | bytes}`` that
``pycocotools.mask`` accepts (well-formed input dicts are used as they are, never modified). Compressed
strings are validated *before* they reach pycocotools (its C parser reads past the end of a truncated
string), with a vectorised numpy decoder of the whole batch that also yields every mask's area (the number
of foreground pixels) and flags "irregular" strings (see :class:`RLEStats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .errors import YTVISFormatError

#: A normalised per-frame segmentation: compressed RLE ``{"size": [H, W], "counts": str | bytes}``.
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
        ``{"size": [height, width], "counts": str | bytes}`` or ``None``. Compressed strings are *not* validated
        here; pass them through :func:`measure_rles`, which rejects malformed ones.

    Raises:
        YTVISFormatError: wrong type, missing keys, wrong size, bad uncompressed counts or polygons.
    """
    if _is_plain_rle(segmentation, [height, width]):
        return segmentation
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


def _is_plain_rle(segmentation: Any, size: list[int]) -> bool:
    """The common case, a compressed RLE dict ``{"size": [H, W] (ints), "counts": str}``, used as is."""
    if type(segmentation) is not dict or type(segmentation.get("counts")) is not str:
        return False
    given = segmentation.get("size")
    return type(given) is list and given == size and type(given[0]) is int is type(given[1])


def normalize_track(segmentations: list, height: int, width: int, name: str) -> list[RLE | None]:
    """:func:`normalize_segmentation` of every frame of one track (``name`` prefixes error messages)."""
    size = [height, width]
    return [
        s if _is_plain_rle(s, size) else normalize_segmentation(s, height, width, f"{name} frame {t}")
        for t, s in enumerate(segmentations)
    ]


@dataclass
class RLEStats:
    """What :func:`compressed_rle_stats` learns about each string, all ``[n]`` arrays.

    Attributes:
        areas: int64 foreground pixel counts (meaningful where ``valid``).
        valid: bool, see :func:`compressed_rle_stats`.
        irregular: bool, a run after the first has length 0. Such (valid, but never produced by
            ``pycocotools.mask.encode``) strings make ``pycocotools.mask.merge`` stop early, which the official
            evaluator's union computation inherits; the IoU code reproduces that on these frames.
    """

    areas: np.ndarray
    valid: np.ndarray
    irregular: np.ndarray


_CHUNK_CHARS = 1 << 20  # decode in batches of ~1M characters to bound the temporary arrays
_UINT32_MASK = _UINT32_LIMIT - 1
# Value of a count written with a single character (0x20 clear): 5 bits, 0x10 being the sign; stored modulo
# 2^32 because pycocotools keeps counts as C ``uint`` (``cnts[m] = (uint) x``), so all the arithmetic below
# is exact uint32 wrap-around arithmetic, identical to what pycocotools computes.
_SINGLE_CHAR_VALUE = np.array(
    [((v & 0x1F) - (32 if v & 0x10 else 0)) & _UINT32_MASK if v < 64 else 0 for v in range(256)], dtype=np.uint32
)


def _ascii_blob(strings: Sequence[str | bytes]) -> tuple[bytes, np.ndarray]:
    """Concatenated bytes and per-string byte lengths (non-ASCII text becomes bytes >= 0x80, i.e. invalid)."""
    try:
        text = "".join(strings)  # TypeError if some are bytes
    except TypeError:
        text = None
    if text is not None and text.isascii():
        return text.encode("ascii"), np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    encoded = [x if isinstance(x, bytes) else x.encode("utf-8", errors="replace") for x in strings]
    return b"".join(encoded), np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))


def _owners(positions: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Index (into ``starts``) of the segment holding each position; ``starts`` sorted, first one 0."""
    return np.searchsorted(starts, positions, side="right") - 1


def _multi_char_values(values: np.ndarray, chars: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Fix ``values`` of counts written with several characters; return the indices of over-long ones."""
    continuation = np.flatnonzero((chars & 0x20) != 0)
    if not continuation.size:
        return continuation
    group = np.searchsorted(ends, continuation)  # the count each continuation character belongs to
    begin = np.where(group > 0, ends[group - 1] + 1, 0)
    multi, which = np.unique(group, return_inverse=True)
    length = ends[multi] - np.where(multi > 0, ends[multi - 1] + 1, 0) + 1
    position = np.minimum(continuation - begin, _MAX_CHARS_PER_COUNT - 1)
    low = np.zeros(len(multi), dtype=np.int64)
    np.add.at(low, which, (chars[continuation].astype(np.int64) & 0x1F) << (5 * position))
    clipped = np.minimum(length, _MAX_CHARS_PER_COUNT)
    last = chars[ends[multi]].astype(np.int64)
    exact = low + ((last & 0x1F) << (5 * (clipped - 1))) - np.where(last & 0x10, 1 << (5 * clipped), 0)
    values[multi] = (exact & _UINT32_MASK).astype(np.uint32)
    return multi[length > _MAX_CHARS_PER_COUNT]


def _parity_prefix_sums(array: np.ndarray) -> np.ndarray:
    """``out[i] = array[i] + array[i - 2] + ...`` (uint32, wrapping): prefix sums of even and odd positions.

    (A cumulative sum down the columns of the ``[N / 2, 2]`` view: much faster than two strided cumsums.)
    """
    padded = array if len(array) % 2 == 0 else np.append(array, array.dtype.type(0))
    return np.cumsum(padded.reshape(-1, 2), axis=0, dtype=array.dtype).reshape(-1)[: len(array)]


def _chain_prefix_sums(values: np.ndarray, chain_starts: np.ndarray) -> np.ndarray:
    """:func:`_parity_prefix_sums` restarted at every index of ``chain_starts`` (sorted, unique)."""
    before = _parity_prefix_sums(values)[chain_starts] - values[chain_starts]  # same-parity sum before a start
    reset = np.empty_like(before)
    for parity in (0, 1):
        chosen = (chain_starts & 1) == parity
        reset[chosen] = np.diff(before[chosen], prepend=before.dtype.type(0))
    shifted = values.copy()
    shifted[chain_starts] -= reset
    return _parity_prefix_sums(shifted)


def _decode_chunk(strings: Sequence[str | bytes], num_pixels: np.ndarray) -> RLEStats:
    n = len(strings)
    blob, lengths = _ascii_blob(strings)
    areas, irregular = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    nonempty = np.flatnonzero(lengths > 0)
    valid = (lengths > 0) | (num_pixels == 0)
    if not len(blob):
        return RLEStats(areas, valid, irregular)
    char_stop = np.cumsum(lengths)
    char_start = (char_stop - lengths)[nonempty]

    chars = np.frombuffer(blob, dtype=np.uint8) - np.uint8(48)  # '0'..'o' -> 0..63, anything else > 63
    bad_char = chars > 63
    if bad_char.any():
        valid[nonempty[np.unique(_owners(np.flatnonzero(bad_char), char_start))]] = False
        chars = np.where(bad_char, np.uint8(0), chars)
    is_end = (chars & 0x20) == 0  # a character without the continuation bit closes a count
    last_char = char_stop[nonempty] - 1
    valid[nonempty] &= is_end[last_char]  # a string must not stop inside a count
    is_end[last_char] = True  # ... and a count never spans two strings
    ends = np.flatnonzero(is_end)
    values = _SINGLE_CHAR_VALUE[chars[ends]]
    over_long = _multi_char_values(values, chars, ends)

    groups = np.searchsorted(ends, char_stop, side="left")  # counts ending before each string's stop
    sizes = np.diff(groups, prepend=0)[nonempty]
    starts = (groups[nonempty] - sizes).astype(np.int64)
    if over_long.size:
        valid[nonempty[_owners(over_long, starts)]] = False

    # counts[i] = values[i] + counts[i - 2] for i > 2: prefix sums along each parity chain of a string
    first_values = values[starts]
    values[starts] = 0
    chain_starts = np.sort(np.concatenate((starts, (starts + 1)[sizes >= 2])))
    counts = _chain_prefix_sums(values, chain_starts)
    counts[starts] = first_values

    zeros = np.flatnonzero(counts == 0)
    zeros = zeros[~np.isin(zeros, starts)]  # a leading empty run is normal (mask starting with foreground)
    if zeros.size:
        irregular[nonempty[_owners(zeros, starts)]] = True
    totals = np.zeros(n, dtype=np.int64)
    totals[nonempty] = np.add.reduceat(counts, starts, dtype=np.int64)
    odd_positions = counts.copy()
    odd_positions[0::2] = 0
    odd_sums = np.add.reduceat(odd_positions, starts, dtype=np.int64)  # counts at odd global positions
    areas[nonempty] = np.where(starts & 1, totals[nonempty] - odd_sums, odd_sums)  # odd positions in the string
    valid &= totals == num_pixels
    return RLEStats(areas, valid, irregular & valid)


def compressed_rle_stats(strings: Sequence[str | bytes], num_pixels: np.ndarray) -> RLEStats:
    """Decode many COCO compressed RLE strings with numpy; return their areas and validity.

    This mirrors ``rleFrString`` of pycocotools (5-bit groups, continuation bit 0x20, sign bit 0x10, counts
    after the third stored as the difference to the count two places earlier), in batches of ~4M characters.

    Args:
        strings: ``n`` compressed ``counts`` strings (``str`` or ``bytes``).
        num_pixels: ``[n]`` int, the ``height * width`` each string must cover.

    Returns:
        :class:`RLEStats`; ``valid`` is False where a string has a character outside ``'0'..'o'``, ends
        inside a count, has a count longer than 7 characters, or whose run lengths, read as pycocotools reads
        them (``uint``), do not sum to ``num_pixels``.
    """
    num_pixels = np.asarray(num_pixels, dtype=np.int64)
    chunks: list[RLEStats] = []
    start, size = 0, 0
    for stop, text in enumerate(strings, start=1):
        size += len(text)
        if size >= _CHUNK_CHARS or stop == len(strings):
            chunks.append(_decode_chunk(strings[start:stop], num_pixels[start:stop]))
            start, size = stop, 0
    if not chunks:
        empty = np.zeros(0, dtype=np.int64)
        return RLEStats(empty, empty.astype(bool), empty.astype(bool))
    return RLEStats(*(np.concatenate([getattr(c, f) for c in chunks]) for f in ("areas", "valid", "irregular")))


@dataclass
class MaskBatch:
    """Normalised segmentations of several tracks, validated and measured together.

    Attributes:
        rles: per track, a list of ``T`` compressed RLE dicts or ``None``.
        areas: per track, ``[T]`` int64 mask areas (0 where absent).
        irregular: per track, ``[T]`` bool, see :class:`RLEStats`.
    """

    rles: list[list[RLE | None]]
    areas: list[np.ndarray]
    irregular: list[np.ndarray]


def measure_rles(tracks: Sequence[Sequence[RLE | None]], names: Sequence[str]) -> MaskBatch:
    """Validate every compressed RLE of ``tracks`` in one batch and compute the per-frame mask areas.

    Args:
        tracks: per track, its normalised per-frame segmentations (output of :func:`normalize_segmentation`).
        names: per track, the prefix used in error messages (e.g. ``"results[4] (video_id=2)"``).

    Raises:
        YTVISFormatError: naming the first track and frame whose compressed RLE is malformed.
    """
    if not tracks:
        return MaskBatch(rles=[], areas=[], irregular=[])
    frames = [rle for track in tracks for rle in track]
    present = np.fromiter((rle is not None for rle in frames), dtype=bool, count=len(frames))
    given = [rle for rle in frames if rle is not None]
    pixels = np.fromiter((rle["size"][0] * rle["size"][1] for rle in given), dtype=np.int64, count=len(given))
    stats = compressed_rle_stats([rle["counts"] for rle in given], pixels)
    if not stats.valid.all():
        _raise_malformed(tracks, names, int(np.flatnonzero(~stats.valid)[0]))
    areas = np.zeros(len(frames), dtype=np.int64)
    areas[present] = stats.areas
    irregular = np.zeros(len(frames), dtype=bool)
    irregular[present] = stats.irregular
    bounds = np.cumsum([len(track) for track in tracks])[:-1]
    return MaskBatch(
        rles=[list(track) for track in tracks], areas=np.split(areas, bounds), irregular=np.split(irregular, bounds)
    )


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
