"""What the web demo does with a video, without the web: load a model (kept between runs), segment with the
`segment` command's own code (`segment_command.segment_input`: same results JSON, overlay and errors), and
turn the result into the table of instances the page shows.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

TABLE_HEADERS = ["instance", "colour", "label", "score", "first frame", "last frame"]


@dataclass
class DemoRun:
    """One segmented video: the overlay `.mp4`, the YouTube-VIS results `.json` and the table rows."""

    overlay: Path
    results: Path
    rows: list[list]


def instance_rows(result) -> list[list]:
    """One row per instance of a `VideoSegmentation`, in its order (by score): number, overlay colour (hex),
    label, score, first and last frame (0-based) on which its mask is not empty (`None` if it never is)."""
    from pycocotools import mask as mask_utils

    from ..processing.visualize import instance_colors

    colors = instance_colors(len(result))
    rows = []
    for index, (label, score, segmentation) in enumerate(
        zip(result.labels.tolist(), result.scores.tolist(), result.segmentations)
    ):
        visible = [frame for frame, rle in enumerate(segmentation) if mask_utils.area(rle) > 0]
        red, green, blue = colors[index]
        rows.append([index + 1, f"#{red:02x}{green:02x}{blue:02x}", result.label_names[label], round(score, 3),
                     visible[0] if visible else None, visible[-1] if visible else None])  # fmt: skip
    return rows


def bundled_video_file(directory: str | Path) -> Path:
    """The bundled demo video (a folder of JPEG frames) as an `.mp4` a browser can play and upload, written
    once into `directory`."""
    from ..assets import demo_video_path
    from ..processing.video_io import VideoReader, write_video

    path = Path(directory) / f"{demo_video_path().name}.mp4"
    if not path.is_file():
        write_video(path, VideoReader(demo_video_path()), fps=5.0)
    return path


class DemoSegmenter:
    """Segments uploaded videos into per-run folders under `work_dir`, keeping the last loaded model.

    Args:
        default_model: directory or installed name used when a run names no model (None: the bundled genvis-tiny).
        work_dir: where each run's outputs go (one new folder per run).
        device: "cpu", "cuda", ...
    """

    def __init__(self, default_model: str | None, work_dir: str | Path, device: str = "cpu"):
        self.default_model = default_model or None
        self.work_dir = Path(work_dir)
        self.device = device
        self._loaded: tuple[str | None, object, object] | None = None

    def model(self, name: str | None = None):
        """(model, processor) for `name` (empty: the default); raises `FileNotFoundError` with the `segment`
        command's message when it is neither a model directory nor an installed name."""
        from ..segment_command import load_model_and_processor

        name = (name or "").strip() or self.default_model
        if self._loaded is None or self._loaded[0] != name:
            self._loaded = None  # release the previous model before loading another
            model, processor = load_model_and_processor(name, self.device)
            self._loaded = (name, model, processor)
        return self._loaded[1], self._loaded[2]

    def run(self, video: str | Path, model: str | None = None, threshold: float = 0.5, top_k: int | None = None,
            clip_length: int | None = None, progress: bool = True) -> DemoRun:  # fmt: skip
        """Segment `video` (a file or a frames folder); raises one of `segment_command.input_errors()`."""
        from ..segment_command import segment_input

        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"score threshold {threshold} is not between 0 and 1")
        for option, value in (("top-k", top_k), ("clip length", clip_length)):
            if value is not None and (value != int(value) or value < 1):
                raise ValueError(f"{option} {value} is not a whole number of at least 1")
        loaded_model, processor = self.model(model)
        source = Path(video)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        output_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.work_dir))
        name = source.stem if source.is_file() else source.name
        try:
            result, written = segment_input(
                loaded_model, processor, str(source), name, output_dir, threshold=threshold,
                top_k=None if top_k is None else int(top_k),
                clip_length=None if clip_length is None else int(clip_length),
                progress=progress, overlay=True, overlay_threshold=threshold,
            )  # fmt: skip
        except BaseException:
            shutil.rmtree(output_dir, ignore_errors=True)  # nothing is left of a failed run
            raise
        return DemoRun(overlay=written[1], results=written[0], rows=instance_rows(result))


__all__ = ["TABLE_HEADERS", "DemoRun", "DemoSegmenter", "bundled_video_file", "instance_rows"]
