"""`genvis-hf segment VIDEO_OR_FRAMES_DIR... --output-dir OUT`: results JSON (and overlays) per video.

For each input `NAME` (file stem or directory name) it writes `OUT/NAME.json`: a list of YouTube-VIS result
entries (`video_id` = NAME, `category_id` = label + 1, `score`, `segmentations` = per-frame COCO RLE) with the
class name under `label`; with `--overlay`, `OUT/NAME.mp4` (and `OUT/NAME.gif` with `--gif`). Every file is
written without a name and named when complete, so nothing partial is left, even by a killed process. Options,
the output folder and the model are checked before any video is read (exit code 2 for a bad option or output
folder, 1 for a model that cannot be loaded). A bad input is reported on one line and the others are still
processed; the exit code is 1 if any input failed. Under `accelerate launch` each process segments its share of the
inputs (`genvis_hf.distributed`, docs/distributed.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def bundled_model_dir() -> Path:
    """The small model shipped with the package (trained on synthetic shapes), used when --model is omitted."""
    from .assets import tiny_model_path

    return tiny_model_path()


def load_model_and_processor(model: str | None, device: str = "cpu"):
    """A GenVIS model + processor from a directory, an installed name (HF cache), or the bundled model; raises
    `genvis_hf.model_loading.ModelLoadError` (one line) when it cannot be used."""
    from .model_loading import ModelLoadError
    from .model_loading import load_model_and_processor as load_checked

    if model is None and not bundled_model_dir().is_dir():
        raise ModelLoadError("no --model given and no bundled model in this installation")
    return load_checked(model or str(bundled_model_dir()), device)


def add_segment_command(parser: argparse.ArgumentParser):
    from .utils.cli_checks import (
        positive_float,
        positive_int,
        score_threshold,
        torch_device,
        unit_fraction,
    )

    parser.description = "Segment and track every object of videos (files or frame directories)."
    parser.add_argument("inputs", nargs="*", metavar="VIDEO_OR_FRAMES_DIR")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="segment the bundled synthetic demo video (with the bundled model unless --model is given)",
    )
    parser.add_argument("--model", help="model directory or installed name (default: the bundled genvis-tiny)")
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--overlay", action="store_true", help="also write OUT/NAME.mp4 with the instances drawn")
    parser.add_argument("--gif", action="store_true", help="also write OUT/NAME.gif (implies --overlay)")
    parser.add_argument("--device", default="cpu", type=torch_device, help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--clip-length", type=positive_int, help="frames per clip (1 online, 3 semi-online; default: model's)"
    )
    parser.add_argument("--max-frames", type=positive_int, help="segment only the first N frames")
    parser.add_argument(
        "--fps", type=positive_float, help="overlay frame rate (default: the source's frame timing, else 10)"
    )
    parser.add_argument(
        "--threshold", type=score_threshold, default=0.0, help="keep instances scoring above this (0-1)"
    )
    parser.add_argument("--top-k", type=positive_int, help="instances per video (default: the model's test_topk)")
    parser.add_argument(
        "--overlay-threshold", type=unit_fraction, default=0.5, help="draw instances scoring at least this (0-1)"
    )
    parser.add_argument("--allow-truncated", action="store_true", help="segment the decodable part of truncated files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return run_segment


def _output_names(inputs: list[str]) -> list[str]:
    from .processing.video_io import video_name
    from .utils.cli_checks import UsageError

    names = [video_name(item) for item in inputs]
    seen: dict[str, str] = {}
    for item, name in zip(inputs, names):
        if not name:
            raise UsageError(f"input {item}: has no name to give its output files (give a named file or folder)")
        if name in seen:
            raise UsageError(f"inputs {seen[name]} and {item} would both write {name}.json: rename one")
        seen[name] = item
    return names


def input_errors() -> tuple[type[BaseException], ...]:
    """What a bad input raises (a missing, undecodable, empty or truncated video, an unwritable output): reported
    as one line, `error: MESSAGE`, by this command and by the web demo, never as a traceback."""
    from .processing.video_io import VideoInputError

    return (VideoInputError, OSError, ValueError)


def segment_input(model, processor, source, name: str, output_dir: Path, *, threshold: float = 0.0,
                  top_k: int | None = None, clip_length: int | None = None, max_frames: int | None = None,
                  allow_truncated: bool = False, progress: bool = True, overlay: bool = False, gif: bool = False,
                  fps: float | None = None, overlay_threshold: float = 0.5):  # fmt: skip
    """Segment one input and write `output_dir/NAME.json` (and the overlays, timed as the source unless `fps` is
    given); returns the `VideoSegmentation` and the written paths. A bad input raises one of `input_errors()`
    before any output file is written."""
    from .evaluation import YTVISResultsWriter
    from .inference import segment_video
    from .processing.video_io import VideoReader, write_video
    from .processing.visualize import overlay_video

    result = segment_video(
        model, processor, source, threshold=threshold, top_k=top_k, clip_length=clip_length,
        max_frames=max_frames, allow_truncated=allow_truncated, progress=progress,
    )  # fmt: skip
    output_dir.mkdir(parents=True, exist_ok=True)
    with YTVISResultsWriter(output_dir / f"{name}.json") as writer:  # temporary file, named at close
        writer.add_results(result.to_ytvis_results(video_id=name))
    written = [output_dir / f"{name}.json"]
    if overlay or gif:
        formats = [".mp4"] + ([".gif"] if gif else [])
        for suffix in formats:
            frames = VideoReader(source, max_frames=result.num_frames, allow_truncated=True)
            timing = None if fps else frames.frame_times  # the source's own (maybe variable) timing
            path = write_video(output_dir / f"{name}{suffix}", overlay_video(frames, result, overlay_threshold),
                               fps=fps or result.fps or 10.0, timestamps=timing)  # fmt: skip
            written.append(path)
    return result, written


def run_segment(args: argparse.Namespace) -> int:
    from .distributed import VideoSplit
    from .utils.cli_checks import UsageError, check_output_dir

    if args.demo:
        from .assets import demo_video_path

        args.inputs = [*args.inputs, str(demo_video_path())]
    if not args.inputs:
        print("error: give at least one video or frames directory (or --demo)", file=sys.stderr)
        return 2
    try:
        check_output_dir(args.output_dir)
        names = _output_names(args.inputs)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        split = VideoSplit(args.device)  # under `accelerate launch`: this process segments its share of the inputs
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        return _segment_share(args, names, split)
    finally:
        split.close()


def _segment_share(args: argparse.Namespace, names: list[str], split) -> int:
    """Segment this process's share of `args.inputs`; the exit code of the job (gathered over the processes)."""
    from transformers.utils import logging as hf_logging

    from .distributed import single_process_launch_note
    from .model_loading import ModelLoadError

    if args.no_progress or not split.is_main_process:
        hf_logging.disable_progress_bar()  # transformers' "Loading weights" bar too
    try:
        model, processor = load_model_and_processor(args.model, split.device(args.device))
    except ModelLoadError as error:
        if split.is_main_process:  # every process would say the same
            print(f"error: {error}", file=sys.stderr)
        return 1
    failures = 0
    share = split.share(len(args.inputs))
    for index in share:
        source, name = args.inputs[index], names[index]
        try:
            result, written = segment_input(
                model, processor, source, name, args.output_dir, threshold=args.threshold, top_k=args.top_k,
                clip_length=args.clip_length, max_frames=args.max_frames, allow_truncated=args.allow_truncated,
                progress=not args.no_progress and split.is_main_process, overlay=args.overlay, gif=args.gif,
                fps=args.fps, overlay_threshold=args.overlay_threshold,
            )  # fmt: skip
            flag = " (truncated source: decodable part only)" if result.truncated else ""
            print(f"{source}: {result.num_frames} frames, {len(result)} instances -> "
                  f"{', '.join(str(p) for p in written)}{flag}")  # fmt: skip
        except input_errors() as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
    if single_process_launch_note():
        print(single_process_launch_note(), file=sys.stderr)
    if split.distributed:
        shares = split.gather_everywhere((len(share), failures))
        if split.is_main_process:
            print(split.describe([count for count, _ in shares], "segmented"))
        failures = sum(failed for _, failed in shares)
    return 1 if failures else 0
