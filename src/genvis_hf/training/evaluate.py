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
                    progress: bool = False) -> list[dict]:  # fmt: skip
    """Results (YouTube-VIS format, one entry per instance) for every video of `source`; streamed to
    `results_path` with `YTVISResultsWriter` (a temporary file renamed when complete) when given."""
    from ..data.dataset import read_frame
    from ..evaluation import YTVISResultsWriter
    from ..processing.rle import masks_to_rle

    label_to_category = source.label_to_category_id
    results: list[dict] = []
    writer = YTVISResultsWriter(results_path) if results_path is not None else None
    iterator = range(len(source.videos))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="evaluate", mininterval=5.0)
    try:
        for index in iterator:
            row = source.videos[index]
            frames = torch.from_numpy(np.stack([read_frame(p) for p in row["file_names"]])).permute(0, 3, 1, 2)
            prediction = predict_video(model, processor, frames, (row["height"], row["width"]))
            entries = [
                {"video_id": int(row["video_id"]), "category_id": int(label_to_category[int(label)]),
                 "score": float(score), "segmentations": masks_to_rle(masks)}  # fmt: skip
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


def evaluate_model(model, processor, source, output_dir: str | os.PathLike | None = None, progress: bool = False) -> dict:
    """Predict every video of `source` and score the results; writes results.json and metrics.json to
    `output_dir` when given."""
    results_path = Path(output_dir) / "results.json" if output_dir is not None else None
    results = predict_dataset(model, processor, source, results_path, progress=progress)
    metrics = ytvis_metrics(source.annotations_path, results)
    if output_dir is not None:
        tmp = Path(output_dir) / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=1))
        os.replace(tmp, Path(output_dir) / "metrics.json")
    return metrics


def add_evaluate_command(parser: argparse.ArgumentParser):
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--model", required=True, help="a save_pretrained GenVIS folder (e.g. a training output)")
    parser.add_argument("--images", required=True, help="folder the annotation file's frame paths are relative to")
    parser.add_argument("--annotations", required=True, help="YouTube-VIS-format annotations JSON with ground truth")
    parser.add_argument("--output-dir", default=None, help="where results.json and metrics.json go (default MODEL/eval)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument("--cache-dir", default=None, help="datasets cache folder")

    def handler(args: argparse.Namespace) -> int:
        from ..data import load_ytvis
        from ..modeling import GenVISForVideoInstanceSegmentation
        from ..processing import GenVISVideoProcessor

        if args.num_threads:
            torch.set_num_threads(args.num_threads)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        start = time.time()
        model = GenVISForVideoInstanceSegmentation.from_pretrained(args.model).to(device).eval()
        processor = GenVISVideoProcessor.from_pretrained(args.model)
        source = load_ytvis(args.annotations, args.images, cache_dir=args.cache_dir)
        output_dir = Path(args.output_dir) if args.output_dir else Path(args.model) / "eval"
        output_dir.mkdir(parents=True, exist_ok=True)
        metrics = evaluate_model(model, processor, source, output_dir, progress=True)
        scalars = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        print(f"evaluated {len(source)} videos in {time.time() - start:.1f}s; results: {output_dir / 'results.json'}")
        print(json.dumps(scalars))
        return 0

    return handler


__all__ = ["add_evaluate_command", "evaluate_model", "predict_dataset", "predict_video", "ytvis_metrics"]
