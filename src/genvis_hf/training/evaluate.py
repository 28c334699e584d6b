"""Inference over a YouTube-VIS-format data set and its video AP (`genvis-hf evaluate`).

`genvis-hf evaluate --model DIR --images DIR --annotations ANN.json [--output-dir OUT]` runs the model on every
video (frames read lazily, one video at a time), writes `results.json` (YouTube-VIS results format) and
`metrics.json` to OUT (default: the model folder's `eval/`), and prints the metrics as one JSON object on its
last line. The metric is `genvis_hf.evaluation.ytvis_evaluate` (the official YouTube-VIS numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch


def ytvis_metrics(ground_truth, results) -> dict:
    """Video AP of `results` against `ground_truth` (paths or loaded objects): `ytvis_evaluate`'s dict (AP, AP50,
    AP75, APs/m/l, AR1/10/100, ARs/m/l, per_category_AP)."""
    from ..evaluation import ytvis_evaluate

    return ytvis_evaluate(ground_truth, results)


@torch.no_grad()
def predict_video(model, processor, frames: torch.Tensor, original_size: tuple[int, int], top_k: int | None = None):
    """frames uint8 `[T, 3, H, W]` -> the processor's post-processed instances (masks at `original_size`)."""
    inputs = processor(videos=[frames], return_tensors="pt")
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    outputs = model(**inputs)
    return processor.post_process_video_instance_segmentation(outputs, target_sizes=[original_size], top_k=top_k)[0]


def predict_dataset(model, processor, source, results_path: str | os.PathLike | None = None,
                    progress: bool = False, indices: list[int] | None = None) -> list[dict]:  # fmt: skip
    """Results (YouTube-VIS format, one entry per instance) for every video of `source` (or the videos at
    `indices`, in that order); streamed to `results_path` with `YTVISResultsWriter` (a temporary file renamed
    when complete) when given."""
    from ..data.dataset import read_frame
    from ..evaluation import YTVISResultsWriter
    from ..processing.rle import masks_to_rle

    label_to_category = source.label_to_category_id
    results: list[dict] = []
    writer = YTVISResultsWriter(results_path) if results_path is not None else None
    iterator = range(len(source.videos)) if indices is None else indices
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="evaluate", mininterval=5.0)
    try:
        for index in iterator:
            row = source.videos[index]
            frames = torch.from_numpy(np.stack([read_frame(p) for p in row["file_names"]])).permute(0, 3, 1, 2)
            prediction = predict_video(model, processor, frames, (row["height"], row["width"]))
            entries = [
                {
                    "video_id": int(row["video_id"]),
                    "category_id": int(label_to_category[int(label)]),
                    "score": float(score),
                    "segmentations": masks_to_rle(masks),
                }
                for score, label, masks in zip(prediction["scores"], prediction["labels"], prediction["masks"])
            ]
            results.extend(entries)
            if writer is not None:
                writer.add_results(entries)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    return results


def evaluate_model(model, processor, source, output_dir: str | os.PathLike | None = None, progress: bool = False,
                   split=None) -> dict:  # fmt: skip
    """Predict every video of `source` and score the results; writes results.json and metrics.json to
    `output_dir` when given. With a multi-process `genvis_hf.distributed.VideoSplit`, each process predicts
    its share and the main process gathers, scores and writes (see `evaluate_split`)."""
    if split is not None and split.distributed:
        return evaluate_split(model, processor, source, split, output_dir, progress=progress)
    results_path = Path(output_dir) / "results.json" if output_dir is not None else None
    results = predict_dataset(model, processor, source, results_path, progress=progress)
    metrics = ytvis_metrics(source.annotations_path, results)
    if output_dir is not None:
        _write_metrics(metrics, output_dir)
    return metrics


def _write_metrics(metrics: dict, output_dir: str | os.PathLike) -> None:
    tmp = Path(output_dir) / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1))
    os.replace(tmp, Path(output_dir) / "metrics.json")


def evaluate_split(model, processor, source, split, output_dir: str | os.PathLike | None = None,
                   progress: bool = False) -> dict:  # fmt: skip
    """`evaluate_model` across the processes of an `accelerate launch`: this process predicts its share of the
    videos (`split.share`); the main process gathers every process's results (in process order, so in data set
    order: the same results.json as one process), checks that every video was evaluated exactly once, scores
    them and writes results.json and metrics.json. Every process returns the metrics."""
    from ..evaluation import YTVISResultsWriter

    indices = split.share(len(source.videos))
    results = predict_dataset(model, processor, source, progress=progress and split.is_main_process,
                              indices=indices)  # fmt: skip
    video_ids = [int(source.videos[index]["video_id"]) for index in indices]
    gathered_results = split.gather_on_main(results)
    gathered_ids = split.gather_on_main(video_ids)
    metrics = None
    if split.is_main_process:
        evaluated = [video for ids in gathered_ids for video in ids]
        expected = [int(video) for video in source.videos["video_id"]]
        if evaluated != expected:  # a lost or repeated video would silently change the metrics
            raise RuntimeError(f"distributed evaluation covered videos {sorted(evaluated)}, expected each of "
                               f"{expected} exactly once")  # fmt: skip
        results = [entry for shard in gathered_results for entry in shard]
        if output_dir is not None:
            with YTVISResultsWriter(Path(output_dir) / "results.json") as writer:
                writer.add_results(results)
        metrics = ytvis_metrics(source.annotations_path, results)
        if output_dir is not None:
            _write_metrics(metrics, output_dir)
    return split.broadcast_from_main(metrics)


def _check_options(args: argparse.Namespace) -> Path:
    """The options' files and folders before any model or data work; returns the output folder. Raises
    `UsageError` (one line)."""
    from ..utils.cli_checks import UsageError, check_output_dir

    if not Path(args.annotations).is_file():
        what = "is a folder" if Path(args.annotations).is_dir() else "does not exist"
        raise UsageError(f"--annotations {args.annotations}: {what} (give a YouTube-VIS-format JSON file)")
    if not Path(args.images).is_dir():
        raise UsageError(f"--images {args.images}: not a folder")
    output_dir = Path(args.output_dir) if args.output_dir else Path(args.model) / "eval"
    return check_output_dir(output_dir, "--output-dir" if args.output_dir else "--output-dir (default MODEL/eval)")


def add_evaluate_command(parser: argparse.ArgumentParser):
    from ..utils.cli_checks import positive_int, torch_device

    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--model", required=True, help="a save_pretrained GenVIS folder (e.g. a training output)")
    parser.add_argument("--images", required=True, help="folder the annotation file's frame paths are relative to")
    parser.add_argument("--annotations", required=True, help="YouTube-VIS-format annotations JSON with ground truth")
    parser.add_argument(
        "--output-dir", default=None, help="where results.json and metrics.json go (default MODEL/eval)"
    )
    parser.add_argument(
        "--device", type=torch_device, default=None, help="cpu, cuda, ... (default: cuda when available)"
    )
    parser.add_argument("--num-threads", type=positive_int, default=None)
    parser.add_argument("--cache-dir", default=None, help="datasets cache folder")

    def handler(args: argparse.Namespace) -> int:
        from ..data import load_ytvis
        from ..distributed import VideoSplit, single_process_launch_note
        from ..evaluation.errors import YTVISFormatError
        from ..model_loading import ModelLoadError, load_model_and_processor
        from ..processing.video_io import VideoInputError
        from ..utils.cli_checks import UsageError

        try:  # options, files and the output folder before any model or data work (exit code 2)
            output_dir = _check_options(args)
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if args.num_threads:
            torch.set_num_threads(args.num_threads)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        start = time.time()
        try:
            split = VideoSplit(device)  # the processes of an `accelerate launch`; one process otherwise
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        try:
            device = split.device(device)
            model, processor = load_model_and_processor(args.model, device)
            with split.local_main_process_first():  # one process per machine builds the data set cache
                source = load_ytvis(args.annotations, args.images, cache_dir=args.cache_dir)
            if split.is_main_process:  # the only writer
                output_dir.mkdir(parents=True, exist_ok=True)
            metrics = evaluate_model(model, processor, source, output_dir, progress=True, split=split)
            counts = split.gather_everywhere(len(split.share(len(source))))
        except (ModelLoadError, YTVISFormatError, VideoInputError) as error:  # a bad model, annotation file or frame
            print(f"error: {error}", file=sys.stderr)
            return 1
        finally:
            split.close()
        if not split.is_main_process:
            return 0
        if single_process_launch_note():
            print(single_process_launch_note(), file=sys.stderr)
        scalars = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        print(f"{split.describe(counts, 'evaluated')} in {time.time() - start:.1f}s; "
              f"results: {output_dir / 'results.json'}")  # fmt: skip
        print(json.dumps(scalars))
        return 0

    return handler


__all__ = ["add_evaluate_command", "evaluate_model", "predict_dataset", "predict_video", "ytvis_metrics"]
