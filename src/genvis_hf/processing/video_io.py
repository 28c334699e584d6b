"""Reading frames from anything a user may hand us, one frame at a time, and writing videos atomically.

Sources: a video file (decoded frame by frame with PyAV, never whole), a directory of image files (natural
order of file names), or in-memory frames (an array / tensor `[T, H, W, C]` or `[T, C, H, W]`, or a list of
PIL images, arrays or tensors, HWC or CHW). Every frame comes out as an RGB `[H, W, 3]` array: uint8, or
float32 on the 0-255 scale (float input whose values are all <= 1 is taken as 0-1 and scaled by 255).
Grayscale frames are repeated to RGB, RGBA frames lose their alpha channel. Image files of any bit depth
PIL reads are brought to 8 bits: 16-bit grayscale (PIL modes `I;16*` and `I`) is divided by 257 (PIL's own
`convert("RGB")` clips it, so a 16-bit frame would read as all white), 16-bit RGB(A) is reduced by PIL, float
images (`F`) follow the float rule above.

Bad input raises `VideoInputError` with one line naming the source and the frame. Behaviour on damage:
- a decoding error mid-file is an error naming the last good frame;
- a truncated copy (the file ends inside a frame's data, or before the duration its header announces) is an
  error unless `allow_truncated=True`, which keeps the decodable frames (not the cut one) and sets
  `reader.truncated`; both for containers whose index is at the start (MP4 with "faststart") and for AVI;
- a frame whose size differs from the first frame's is an error (GenVIS needs one size per video).
Video files also give each frame's presentation time (`reader.frame_times`), so that a variable-frame-rate
source can be written back with its own timing (`write_video(..., timestamps=)`).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..utils.files import PendingFile

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class VideoInputError(ValueError):
    """A video, frame directory or frame cannot be used; the message names the source and the frame."""


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def video_name(source: str | os.PathLike) -> str:
    """The name of a video path for messages and output files: a file's stem, a folder's own name (`.` and `..`
    resolved: `segment .` in a frames folder is named after that folder); "" for the file system root."""
    path = Path(source)
    return path.stem if path.is_file() else Path(os.path.abspath(path)).name


def image_to_rgb(image: Image.Image, where: str) -> np.ndarray:
    """A PIL image of any mode -> RGB `[H, W, 3]` uint8 (float32 0-255 for float images); see the module doc."""
    if image.mode in ("RGB", "RGBA", "L"):
        return to_rgb_frame(np.asarray(image), where)
    if image.mode == "I" or image.mode.startswith("I;16"):  # 16-bit grayscale (mode I: 32-bit integers)
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise VideoInputError(f"{where}: integer pixels outside 0..65535 ({values.min()}..{values.max()})")
        return to_rgb_frame(np.round(values / 257.0).astype(np.uint8), where)
    if image.mode == "F":
        return to_rgb_frame(np.asarray(image, dtype=np.float32), where)
    return to_rgb_frame(np.asarray(image.convert("RGB")), where)


def read_image(path: str | os.PathLike, where: str | None = None) -> np.ndarray:
    """An image file as RGB `[H, W, 3]` (see `image_to_rgb`); `VideoInputError` naming the file when it cannot
    be read (missing, not an image, truncated)."""
    where = where or str(path)
    try:
        with Image.open(path) as image:
            image.load()
            return image_to_rgb(image, where)
    except VideoInputError:
        raise
    except Exception as error:  # OSError (missing, truncated), PIL.UnidentifiedImageError, decoder errors
        raise VideoInputError(f"{where} could not be read ({_reason(error)})") from error


def to_rgb_frame(frame: Any, where: str) -> np.ndarray:
    """One frame -> RGB `[H, W, 3]` uint8 or float32 (0-255). `where` names it in errors ("clip.mp4 frame 3")."""
    if isinstance(frame, Image.Image):
        return image_to_rgb(frame, where)
    array = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise VideoInputError(f"{where}: expected an image [H, W, C] or [C, H, W], got shape {array.shape}")
    if array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    channels = array.shape[2]
    if channels == 1:
        array = np.repeat(array, 3, axis=2)
    elif channels == 4:
        array = array[:, :, :3]
    elif channels != 3:
        raise VideoInputError(f"{where}: {channels} channels (expected 1, 3 or 4), shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise VideoInputError(f"{where}: empty image of shape {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise VideoInputError(f"{where}: unsupported pixel type {array.dtype}")
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise VideoInputError(f"{where}: integer pixels outside 0..255 ({array.min()}..{array.max()})")
        return array.astype(np.uint8)
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise VideoInputError(f"{where}: non-finite pixel values")
    if array.min() < 0 or array.max() > 255:
        raise VideoInputError(f"{where}: float pixels outside 0..255 ({array.min():g}..{array.max():g})")
    return array * 255.0 if array.max() <= 1.0 else array


class VideoReader:
    """Iterate over the RGB frames of a source, checking that they all have the same size.

    Args:
        source: video file path, frames directory path, array/tensor `[T, ...]` or a list of frames.
        max_frames: stop after this many frames.
        allow_truncated: accept a video file that ends before its announced duration (see module doc).

    Attributes: `name` (for messages and output files), `fps` (None when unknown), `num_frames_hint` (from
    metadata, may be wrong), `truncated`, `frames_read` (after iteration), `frame_times` (video files: the
    presentation time in seconds of each frame decoded so far, None where the file gives none; filled during
    iteration; None for other sources).
    """

    def __init__(self, source: Any, max_frames: int | None = None, allow_truncated: bool = False):
        self.source = source
        self.max_frames = max_frames
        self.allow_truncated = allow_truncated
        self.truncated = False
        self.frames_read = 0
        self.fps: float | None = None
        self.frame_times: list[float] | None = None
        self.num_frames_hint: int | None = None
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            self.name = video_name(path)
            if not path.exists():
                raise VideoInputError(f"{path}: no such file or directory")
            self.kind = "directory" if path.is_dir() else "file"
            self.path = path
            if self.kind == "directory":
                self._files = sorted(
                    (p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
                    key=lambda p: _natural_key(p.name),
                )
                if not self._files:
                    raise VideoInputError(f"{path}: no image frames ({', '.join(sorted(IMAGE_EXTENSIONS))})")
                self.num_frames_hint = len(self._files)
            else:
                self.frame_times = []
                self._probe_file()
        else:
            self.kind = "frames"
            self.name = "video"
            self.path = None
            if isinstance(source, (np.ndarray, torch.Tensor)) and source.ndim in (3, 4):
                self.num_frames_hint = int(source.shape[0])
            elif isinstance(source, (list, tuple)):
                self.num_frames_hint = len(source)
            else:
                raise VideoInputError(
                    f"unsupported video input {type(source).__name__}: give a path, an array/tensor [T, H, W, C] or "
                    "[T, C, H, W], or a list of frames"
                )
            if self.num_frames_hint == 0:
                raise VideoInputError("video: no frames")
        if max_frames is not None and self.num_frames_hint is not None:
            self.num_frames_hint = min(self.num_frames_hint, max_frames)

    # ------------------------------------------------------------------ video files
    def _probe_file(self) -> None:
        import av

        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise VideoInputError(f"{self.path}: contains no video stream")
                stream = container.streams.video[0]
                self.fps = float(stream.average_rate) if stream.average_rate else None
                self.num_frames_hint = int(stream.frames) or None
        except VideoInputError:
            raise
        except Exception as error:  # av.error.* and OSError: not a container ffmpeg understands
            raise VideoInputError(f"{self.path}: not a readable video ({_reason(error)})") from error

    def count_file_frames(self) -> int:
        """The video file's frames, counted by demuxing its packets (no decoding: milliseconds), because headers can
        be wrong (tree.avi announces 444 frames and holds 68). A file that ends before the duration its header
        announces raises, as iterating does, unless `allow_truncated`."""
        import av

        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            count, last_pts = 0, None
            for packet in container.demux(stream):
                if packet.size:
                    count += 1
                    pts = packet.pts if packet.pts is not None else packet.dts
                    last_pts = pts if last_pts is None or (pts is not None and pts > last_pts) else last_pts
            if count and not self.allow_truncated and self._looks_truncated(stream, last_pts):
                raise VideoInputError(
                    f"{self.path}: ends after {count} frames ({self._seconds(stream, last_pts):.2f} s) but its header "
                    f"announces {self._announced_seconds(stream):.2f} s: the file looks truncated "
                    "(segment_video(..., allow_truncated=True) / --allow-truncated segments the decodable part)"
                )
        return count

    def _decode_file(self) -> Iterator[np.ndarray]:
        import av

        try:
            container = av.open(str(self.path))
        except Exception as error:
            raise VideoInputError(f"{self.path}: not a readable video ({_reason(error)})") from error
        file_size = self.path.stat().st_size
        with container:
            stream = container.streams.video[0]
            last_pts, index, cut_pts = None, 0, set()
            self.frame_times.clear()  # in place: a consumer may hold the list (see write_video)
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except Exception as error:  # the demuxer itself gave up on damaged data
                    raise VideoInputError(f"{self.path}: reading failed after frame {index - 1 if index else 'none'} "
                                          f"({_reason(error)})") from error  # fmt: skip
                cut_here = _cut_by_end_of_file(packet, file_size)
                try:
                    frames = packet.decode()
                except Exception as error:
                    if not cut_here:
                        raise VideoInputError(
                            f"{self.path}: decoding failed after frame {index - 1 if index else 'none'} "
                            f"(frame {index} is damaged: {_reason(error)})"
                        ) from error
                    frames = []
                if cut_here:
                    cut_pts.add(packet.pts)
                    if not self.allow_truncated:
                        raise VideoInputError(
                            f"{self.path}: the file ends inside the data of frame {index}: it looks truncated "
                            "(allow_truncated=True / --allow-truncated segments the decodable part)"
                        )
                if cut_pts:  # the cut packet's frame is incomplete, also when the decoder releases it later
                    frames = [frame for frame in frames if frame.pts is not None and frame.pts not in cut_pts]
                for frame in frames:
                    if frame.pts is not None:
                        last_pts = frame.pts if last_pts is None else max(last_pts, frame.pts)
                    self.frame_times.append(None if frame.time is None else float(frame.time))
                    yield frame.to_ndarray(format="rgb24")
                    index += 1
            truncated = bool(cut_pts) or (bool(index) and self._looks_truncated(stream, last_pts))
            if truncated and index and not self.allow_truncated:
                raise VideoInputError(
                    f"{self.path}: ends after frame {index - 1} ({self._seconds(stream, last_pts):.2f} s) but its header "
                    f"announces {self._announced_seconds(stream):.2f} s: the file looks truncated "
                    "(allow_truncated=True / --allow-truncated segments the decodable part)"
                )
            self.truncated = bool(index) and truncated

    @staticmethod
    def _seconds(stream, pts) -> float:
        start = stream.start_time or 0
        frame_seconds = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0
        return float((pts - start) * stream.time_base) + frame_seconds if pts is not None else 0.0

    @staticmethod
    def _announced_seconds(stream) -> float:
        by_duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
        by_frames = stream.frames / float(stream.average_rate) if stream.frames and stream.average_rate else 0.0
        return max(by_duration, by_frames)

    def _looks_truncated(self, stream, last_pts) -> bool:
        announced = self._announced_seconds(stream)
        if not announced or last_pts is None:
            return False
        frame_seconds = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0
        return self._seconds(stream, last_pts) < announced - max(2 * frame_seconds, 0.02 * announced)

    # ------------------------------------------------------------------ iteration
    def _raw_frames(self) -> Iterator[tuple[Any, str]]:
        if self.kind == "file":
            for index, frame in enumerate(self._decode_file()):
                yield frame, f"{self.path} frame {index}"
        elif self.kind == "directory":
            for index, file in enumerate(self._files):
                frame = read_image(file, where=f"{file}: frame {index}")
                yield frame, f"{file} (frame {index})"
        else:
            source = self.source
            if isinstance(source, (np.ndarray, torch.Tensor)) and source.ndim == 4 and source.shape[-1] not in (1, 3, 4) \
                    and source.shape[1] in (1, 3, 4):  # fmt: skip
                source = (
                    source.permute(0, 2, 3, 1) if isinstance(source, torch.Tensor) else source.transpose(0, 2, 3, 1)
                )
            for index, frame in enumerate(source):
                yield frame, f"video frame {index}"

    def __iter__(self) -> Iterator[np.ndarray]:
        size = None
        self.frames_read = 0
        for raw, where in self._raw_frames():
            if self.max_frames is not None and self.frames_read >= self.max_frames:
                break
            frame = to_rgb_frame(raw, where)
            if size is None:
                size = frame.shape[:2]
            elif frame.shape[:2] != size:
                raise VideoInputError(
                    f"{where}: size {frame.shape[1]}x{frame.shape[0]} differs from the first frame's {size[1]}x{size[0]}"
                )
            self.frames_read += 1
            yield frame
        if self.frames_read == 0:
            raise VideoInputError(f"{self.path or 'video'}: no decodable frames")


def read_video(source: Any, max_frames: int | None = None, allow_truncated: bool = False) -> np.ndarray:
    """All frames of a source as `[T, H, W, 3]` (uint8, or float32 if any frame is float)."""
    frames = list(VideoReader(source, max_frames=max_frames, allow_truncated=allow_truncated))
    if any(f.dtype != np.uint8 for f in frames):
        frames = [f.astype(np.float32) for f in frames]
    return np.stack(frames)


def _cut_by_end_of_file(packet, file_size: int) -> bool:
    """The demuxer flagged `packet` incomplete and its data runs to the end of the file: a truncated copy."""
    position = packet.pos if packet.pos is not None else -1
    return bool(packet.is_corrupt) and position >= 0 and position + packet.size >= file_size


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:200]


class AtomicOutput:
    """A file written without a name in the destination's directory and given its name when closed cleanly.

    `with AtomicOutput(path) as temp_path: ...write temp_path...`: on an exception nothing is left and `path` is
    untouched; a previous file at `path` is replaced only on success. If the process is killed (even by SIGKILL)
    while writing, the kernel reclaims the unnamed file (`genvis_hf.utils.files.PendingFile`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.pending = PendingFile(self.path.parent, name_hint=self.path.stem, suffix=self.path.suffix)
        self.temp = self.pending.path
        return self.temp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.pending.publish(self.path)
        else:
            self.pending.discard()


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 10.0,
                timestamps: Sequence[float | None] | None = None) -> Path:  # fmt: skip
    """Write RGB uint8 `[H, W, 3]` frames to `.mp4` (H.264, yuv420p; odd sizes padded by one pixel) or
    `.gif`, atomically.

    Frame i is shown at `i / fps` seconds, or, with `timestamps`, at `timestamps[i] - timestamps[0]` (a
    variable-frame-rate source keeps its timing; `fps` then gives the last frame's duration, and a None time the
    frame's place at `fps`). `timestamps[i]` is
    read only after frame i was produced, so a `VideoReader`'s `frame_times`, filled while it decodes, works.
    """
    path = Path(path)
    suffix = path.suffix.lower()

    def seconds(index: int) -> float:
        if timestamps is None or timestamps[index] is None or timestamps[0] is None:
            return index / fps
        return float(timestamps[index]) - float(timestamps[0])

    with AtomicOutput(path) as temp:
        if suffix == ".gif":
            images = [Image.fromarray(frame) for frame in frames]
            if not images:
                raise ValueError("no frames to write")
            # GIF delays are whole centiseconds: round the times, not each delay, so that errors do not add up
            ticks = [round(100 * seconds(i)) for i in range(len(images))]
            ticks.append(ticks[-1] + max(round(100 / fps), 1))
            durations = [10 * max(end - start, 2) for start, end in itertools.pairwise(ticks)]
            images[0].save(temp, format="GIF", save_all=True, append_images=images[1:], duration=durations,
                           loop=0)  # fmt: skip
        elif suffix == ".mp4":
            from fractions import Fraction

            import av

            rate = Fraction(fps).limit_denominator(1000)
            time_base = 1 / rate if timestamps is None else Fraction(1, 90000)
            with av.open(str(temp), mode="w", format="mp4") as container:
                stream, held, pts = None, None, -1

                def mux(packets, last_duration: int | None = None) -> None:
                    # Each packet is muxed once the next one is known, with the duration up to it: players and the
                    # container's duration then follow the timestamps (no B-frames: packets come in pts order).
                    nonlocal held
                    for packet in packets:
                        if held is not None:
                            held.duration = packet.pts - held.pts
                            container.mux(held)
                        held = packet
                    if last_duration is not None and held is not None:
                        held.duration = last_duration
                        container.mux(held)

                for index, frame in enumerate(frames):
                    height, width = frame.shape[:2]
                    if stream is None:
                        stream = container.add_stream("libx264", rate=rate)
                        stream.width, stream.height = width + width % 2, height + height % 2
                        stream.pix_fmt = "yuv420p"
                        stream.codec_context.time_base = time_base
                        stream.codec_context.max_b_frames = 0
                    if width % 2 or height % 2:
                        frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
                    picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                    pts = max(round(seconds(index) / time_base), pts + 1)  # strictly increasing
                    picture.pts, picture.time_base = pts, time_base
                    mux(stream.encode(picture))
                if stream is None:
                    raise ValueError("no frames to write")
                mux(stream.encode(), last_duration=max(1, round(1 / fps / time_base)))
        else:
            raise ValueError(f"{path}: unsupported video format {suffix!r} (use .mp4 or .gif)")
    return path
