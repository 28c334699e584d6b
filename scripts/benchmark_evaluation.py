#!/usr/bin/env python
"""Time ``ytvis_evaluate`` on a synthetic data set the size of YouTube-VIS 2019 val.

    python scripts/benchmark_evaluation.py [--runs 3] [--original-dir /path/to/GenVIS]

Data (fixed seed): 302 videos of 36 frames at 360x640, 40 categories, 1-4 ground-truth tracks per video (a
few crowd), 10 predicted tracks per video (mostly jittered copies of ground truth, some with the wrong class,
some random). Masks are drifting boxes, written as compressed RLE JSON files in a temporary directory.

Each run is a fresh worker process that scores the *files* (JSON parsing included), so that its peak
memory is meaningful: memory is the worker's peak resident set size (``VmHWM`` from ``/proc/self/status``),
reported as the total and as the increase over the same process right after its imports. Wall-clock and
CPU seconds (``time.process_time``, less sensitive to other load on the machine) are both reported.

With ``--original-dir`` (a checkout of github:miranheo/GenVIS) the original ``ytvos.py``/``ytvoseval.py``
are loaded by file path in the worker, timed the same way, and their metrics compared with ours.

Prints one JSON line on stdout (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

NUM_VIDEOS, NUM_FRAMES, HEIGHT, WIDTH = 302, 36, 360, 640
NUM_CATEGORIES, PREDICTIONS_PER_VIDEO = 40, 10
KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def box_rle(y0: int, x0: int, y1: int, x1: int) -> dict[str, Any] | None:
    """Compressed RLE of the box [y0, y1) x [x0, x1) in a HEIGHT x WIDTH frame, built without a bitmap."""
    from pycocotools import mask as mask_utils

    y0, y1 = max(0, y0), min(HEIGHT, y1)
    x0, x1 = max(0, x0), min(WIDTH, x1)
    if y1 <= y0 or x1 <= x0:
        return None
    h, n = y1 - y0, x1 - x0
    if h == HEIGHT:  # full-height columns form one run (canonical RLE, as mask.encode writes it)
        counts = np.array([x0 * HEIGHT, n * HEIGHT, (WIDTH - x1) * HEIGHT], dtype=np.int64)
    else:  # column-major runs: background, then h foreground pixels per column
        counts = np.full(2 * n + 1, HEIGHT - h, dtype=np.int64)
        counts[0] = x0 * HEIGHT + y0
        counts[1::2] = h
        counts[-1] = HEIGHT * WIDTH - counts[:-1].sum()
    if counts[-1] == 0:  # mask.encode never ends with an empty run
        counts = counts[:-1]
    rle = mask_utils.frPyObjects({"size": [HEIGHT, WIDTH], "counts": counts.tolist()}, HEIGHT, WIDTH)
    return {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}


def track(rng: np.random.Generator, box: np.ndarray, drift: np.ndarray) -> tuple[list, list]:
    """Per-frame RLE of a drifting box (absent in ~10% of frames) and the per-frame areas."""
    segmentations, areas = [], []
    for t in range(NUM_FRAMES):
        y0, x0, y1, x1 = (box + drift * t).round().astype(int)
        rle = None if rng.random() < 0.1 else box_rle(y0, x0, y1, x1)
        segmentations.append(rle)
        areas.append(None if rle is None else int((min(HEIGHT, y1) - max(0, y0)) * (min(WIDTH, x1) - max(0, x0))))
    return segmentations, areas


def random_box(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = rng.integers(20, 300), rng.integers(20, 400)
    y0, x0 = rng.integers(0, HEIGHT - h), rng.integers(0, WIDTH - w)
    return np.array([y0, x0, y0 + h, x0 + w], dtype=float), np.tile(rng.normal(0, 1.5, size=2), 2)


def make_dataset(seed: int = 0) -> tuple[dict, list]:
    rng = np.random.default_rng(seed)
    videos, annotations, results = [], [], []
    for v in range(1, NUM_VIDEOS + 1):
        videos.append({"id": v, "height": HEIGHT, "width": WIDTH, "length": NUM_FRAMES})
        objects = []
        for _ in range(int(rng.integers(1, 5))):
            box, drift = random_box(rng)
            category = int(rng.integers(1, NUM_CATEGORIES + 1))
            segmentations, areas = track(rng, box, drift)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": v,
                    "category_id": category,
                    "iscrowd": int(rng.random() < 0.05),
                    "segmentations": segmentations,
                    "areas": areas,
                }
            )
            objects.append((box, drift, category))
        for _ in range(PREDICTIONS_PER_VIDEO):
            if rng.random() < 0.7:
                box, drift, category = objects[int(rng.integers(len(objects)))]
                box = box + rng.normal(0, 8, size=4)
                if rng.random() < 0.2:
                    category = int(rng.integers(1, NUM_CATEGORIES + 1))
            else:
                (box, drift), category = random_box(rng), int(rng.integers(1, NUM_CATEGORIES + 1))
            segmentations, _ = track(rng, box, drift)
            results.append(
                {"video_id": v, "category_id": category, "score": float(rng.random()), "segmentations": segmentations}
            )
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, NUM_CATEGORIES + 1)]
    return {"videos": videos, "categories": categories, "annotations": annotations}, results


def _max_rss_mib() -> float:
    """Peak resident set size of this process in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status`` (reset by ``exec``, unlike ``ru_maxrss``, which a child process
    inherits from the parent it was forked from); elsewhere ``resource.getrusage(...).ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    divisor = 2**20 if sys.platform == "darwin" else 2**10  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / divisor


def _run_ours(gt_path: str, results_path: str) -> dict[str, float]:
    from genvis_hf.evaluation import ytvis_evaluate

    return {k: v for k, v in ytvis_evaluate(gt_path, results_path).items() if k in KEYS}


def _stub_matplotlib() -> None:
    """ytvos.py imports matplotlib for its (unused here) plotting helpers; stand in if it is not installed."""
    import importlib.util
    import types

    if importlib.util.find_spec("matplotlib") is not None:
        return
    for name in ("matplotlib", "matplotlib.pyplot", "matplotlib.collections", "matplotlib.patches"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["matplotlib.collections"].PatchCollection = object
    sys.modules["matplotlib.patches"].Polygon = object


def _run_original(gt_path: str, results_path: str, original_dir: str) -> dict[str, float]:
    import contextlib
    import importlib.util
    import io

    if not hasattr(np, "float"):
        np.float = float  # the original accumulate() uses the alias removed in numpy 1.24
    _stub_matplotlib()
    api = Path(original_dir) / "vita" / "data" / "datasets" / "ytvis_api"
    modules = {}
    for name in ("ytvos", "ytvoseval"):
        spec = importlib.util.spec_from_file_location(f"original_{name}", api / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = modules["ytvos"].YTVOS(gt_path)
        evaluator = modules["ytvoseval"].YTVOSeval(gt, gt.loadRes(results_path), "segm")
        evaluator.params.maxDets = [1, 10, 100]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(KEYS, map(float, evaluator.stats)))


def worker(args: argparse.Namespace) -> None:
    """One timed evaluation in this (fresh) process; prints a JSON line."""
    import pycocotools.mask  # noqa: F401  (imported by both; not part of the timing)

    if args.worker == "ours":
        import genvis_hf.evaluation  # noqa: F401
    baseline = _max_rss_mib()
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.worker == "ours":
        metrics = _run_ours(args.gt, args.results)
    else:
        metrics = _run_original(args.gt, args.results, args.original_dir)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = _max_rss_mib()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "peak_rss_mib": peak,
                "rss_increase_mib": peak - baseline,
                "metrics": metrics,
            }
        )
    )


def _spawn(kind: str, gt: Path, results: Path, original_dir: str | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", kind, "--gt", str(gt), "--results", str(results)]
    if original_dir:
        command += ["--original-dir", original_dir]
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cpu_name() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    names = [line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")]
    return names[0] if names else "unknown"


def _summary(kind: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        f"{kind}_median_s": round(statistics.median(r["seconds"] for r in runs), 3),
        f"{kind}_runs_s": [round(r["seconds"], 3) for r in runs],
        f"{kind}_median_cpu_s": round(statistics.median(r["cpu_seconds"] for r in runs), 3),
        f"{kind}_peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs), 1),
        f"{kind}_rss_increase_mib": round(max(r["rss_increase_mib"] for r in runs), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per evaluator (median reported)")
    parser.add_argument("--original-dir", help="GenVIS checkout: also time the original evaluator")
    parser.add_argument("--worker", choices=["ours", "original"], help=argparse.SUPPRESS)
    parser.add_argument("--gt", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    print("generating the synthetic data set...", file=sys.stderr)
    gt, results = make_dataset()
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, results_path = Path(tmp) / "gt.json", Path(tmp) / "results.json"
        gt_path.write_text(json.dumps(gt))
        results_path.write_text(json.dumps(results))
        report: dict[str, Any] = {
            "videos": NUM_VIDEOS,
            "frames": NUM_FRAMES,
            "frame_size": [HEIGHT, WIDTH],
            "gt_tracks": len(gt["annotations"]),
            "predictions": len(results),
            "results_json_mib": round(results_path.stat().st_size / 2**20, 1),
            "memory": "peak RSS (VmHWM of /proc/self/status) of a fresh worker process per run",
            "cpu": _cpu_name(),
        }
        ours = []
        for run in range(args.runs):
            print(f"ytvis_evaluate run {run + 1}/{args.runs}...", file=sys.stderr)
            ours.append(_spawn("ours", gt_path, results_path, None))
        report.update(_summary("ytvis_evaluate", ours))
        report["AP"] = ours[0]["metrics"]["AP"]
        if args.original_dir:
            original = []
            for run in range(args.runs):
                print(f"original evaluator run {run + 1}/{args.runs}...", file=sys.stderr)
                original.append(_spawn("original", gt_path, results_path, args.original_dir))
            report.update(_summary("original", original))
            report["speedup"] = round(report["original_median_s"] / report["ytvis_evaluate_median_s"], 2)
            report["cpu_speedup"] = round(report["original_median_cpu_s"] / report["ytvis_evaluate_median_cpu_s"], 2)
            report["max_abs_metric_diff"] = max(abs(ours[0]["metrics"][k] - original[0]["metrics"][k]) for k in KEYS)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
