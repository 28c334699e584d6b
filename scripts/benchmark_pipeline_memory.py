#!/usr/bin/env python
"""Peak memory of `pipeline("video-instance-segmentation")` with compressed (RLE, the default) and dense masks.

Each mode runs in a fresh child process: it builds the pipeline (the bundled genvis-tiny unless `--model`),
segments the video and reports its peak RSS (`ru_maxrss`), the RSS before the call (model loaded) and the bytes
the returned masks hold. Segmentation itself streams (memory flat in the video's length); what differs is the
output: dense masks are T x H x W bytes per instance.

    python scripts/benchmark_pipeline_memory.py                                   # ../shared/data/videos/box.mp4
    python scripts/benchmark_pipeline_memory.py --video other.mp4 --model DIR
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_VIDEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "box.mp4"


def _rss_mb() -> float:
    import os

    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_mode(args: argparse.Namespace) -> dict:
    import torch
    from transformers import pipeline

    import genvis_hf
    from genvis_hf.assets import tiny_model_path

    torch.set_num_threads(args.threads)
    segmenter = pipeline("video-instance-segmentation", model=args.model or str(tiny_model_path()))
    before = _rss_mb()
    start = time.perf_counter()
    instances = segmenter(args.video, return_rle=args.mode == "rle")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.mode == "rle":
        held = sum(len(s["counts"]) for i in instances for s in i["segmentations"])
        frames = len(instances[0]["segmentations"]) if instances else 0
        # the decode helper gives the dense masks back, one instance at a time
        assert all(genvis_hf.decode_masks(i["segmentations"]).shape[0] == frames for i in instances[:1])
    else:
        held = sum(i["masks"].numel() * i["masks"].element_size() for i in instances)
        frames = instances[0]["masks"].shape[0] if instances else 0
    return {"mode": args.mode, "instances": len(instances), "frames": frames, "mask_bytes_held_mb": round(held / 2**20, 1),
            "rss_before_call_mb": round(before), "peak_rss_mb": round(peak), "seconds": round(seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", default=str(DEFAULT_VIDEO))
    parser.add_argument(
        "--model", default=None, help="model directory or installed name (default: bundled genvis-tiny)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=["dense", "rle"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    results = {}
    for mode in ("dense", "rle"):
        completed = subprocess.run([sys.executable, __file__, "--mode", mode, *sys.argv[1:]], capture_output=True,
                                   text=True, check=False)  # fmt: skip
        if completed.returncode != 0:
            sys.exit(f"{mode} run failed:\n{completed.stderr[-3000:]}")
        results[mode] = json.loads(completed.stdout.strip().splitlines()[-1])
        print(json.dumps(results[mode]))
    print(json.dumps({"video": args.video, "peak_rss_mb": {m: r["peak_rss_mb"] for m, r in results.items()},
                      "dense_over_rle": round(results["dense"]["peak_rss_mb"] / results["rle"]["peak_rss_mb"], 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
