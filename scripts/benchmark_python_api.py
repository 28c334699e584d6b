"""Seconds per frame as a user calls the model from Python: in a fresh process, with no allocator tuning and no
timing hooks, `outputs = model(**processor(videos=[frames], do_resize=False, return_tensors="pt"))` then
`processor.post_process_video_instance_segmentation(outputs, target_sizes=[...])`, under `torch.inference_mode()`.

    python scripts/benchmark_python_api.py --preset genvis-r50-ytvis19 --size 360 480 --frames 36
    python scripts/benchmark_python_api.py --preset genvis-swinl-ytvis19 --size 448 597 --frames 8
    # interleaved A/B of two source trees (e.g. a checkout of an earlier commit and this one), fresh process each:
    python scripts/benchmark_python_api.py --ab ../old/src src --pairs 3

Each process runs one warm-up, then `--runs` timed runs; its result is their median. With `--ab`, the processes
alternate between the two trees (A, B, A, B, ...) and the report gives each tree's median over its processes and
the ratio. Only public API is used, so any version of genvis_hf can be measured. Random weights (`--preset`) or a
converted model (`--model`); frames are the first `--frames` of `--video`, resized to `--size` (the test resize
done beforehand, as `do_resize=False` implies), masks at `--target-size`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = REPO.parent / "shared" / "data" / "videos" / "vtest.avi"


def child(args) -> None:
    import numpy as np
    import torch
    from PIL import Image

    torch.set_num_threads(args.threads)
    import genvis_hf
    from genvis_hf import GenVISConfig, GenVISForVideoInstanceSegmentation, GenVISVideoProcessor
    from genvis_hf.processing.video_io import VideoReader

    height, width = args.size
    frames = np.stack([
        np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
        for frame in VideoReader(args.video, max_frames=args.frames)
    ])  # fmt: skip
    if args.model:
        model = GenVISForVideoInstanceSegmentation.from_pretrained(args.model)
    else:
        torch.manual_seed(0)
        model = GenVISForVideoInstanceSegmentation(GenVISConfig.from_preset(args.preset))
    model = model.to(getattr(torch, args.dtype)).eval()
    if not args.model and hasattr(GenVISVideoProcessor, "from_preset"):  # the preset's top-k (older versions: config)
        processor = GenVISVideoProcessor.from_preset(args.preset)
    else:
        processor = GenVISVideoProcessor.from_model_config(model.config)
    times, instances = [], 0
    with torch.inference_mode():
        for run in range(args.runs + 1):
            start = time.perf_counter()
            inputs = processor(videos=[frames], do_resize=False, return_tensors="pt")
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            outputs = model(**inputs)
            result = processor.post_process_video_instance_segmentation(
                outputs, target_sizes=[tuple(args.target_size)]
            )[0]
            elapsed = (time.perf_counter() - start) / len(frames)
            instances = len(result["scores"])
            if run:
                times.append(elapsed)
    print(json.dumps({
        "genvis_hf": str(Path(genvis_hf.__file__).parents[1]), "median_s_per_frame": round(statistics.median(times), 4),
        "runs": [round(t, 4) for t in times], "instances": instances,
    }))  # fmt: skip


def run_process(args, source: str | None) -> dict:
    command = [sys.executable, __file__, "--child", "--preset", args.preset, "--video", str(args.video),
               "--frames", str(args.frames), "--size", *map(str, args.size), "--target-size", *map(str, args.target_size),
               "--runs", str(args.runs), "--threads", str(args.threads), "--dtype", args.dtype]  # fmt: skip
    if args.model:
        command += ["--model", args.model]
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(Path(source).resolve())
        # each tree builds its operators into a folder of its own (one shared folder would rebuild at every switch)
        base = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions"))
        digest = hashlib.sha1(str(Path(source).resolve()).encode()).hexdigest()[:10]
        env["TORCH_EXTENSIONS_DIR"] = str(base / f"ab-{digest}")
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        raise SystemExit(f"the benchmark process failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="genvis-r50-ytvis19")
    parser.add_argument("--model", help="a converted model directory instead of random weights")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"))
    parser.add_argument("--target-size", type=int, nargs=2, default=[576, 768], metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--ab",
        nargs=2,
        metavar=("SRC_A", "SRC_B"),
        help="two source trees (the folder holding genvis_hf) to compare in alternating fresh processes",
    )
    parser.add_argument("--pairs", type=int, default=3, help="with --ab: processes per tree")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if not args.ab:
        print(json.dumps(run_process(args, None)))
        return
    results: dict[str, list[float]] = {"A": [], "B": []}
    for pair in range(args.pairs):
        for label, source in zip("AB", args.ab):
            result = run_process(args, source)
            results[label].append(result["median_s_per_frame"])
            print(f"pair {pair + 1} {label} ({source}): {result['median_s_per_frame']:.4f} s/frame", file=sys.stderr)
    medians = {label: statistics.median(values) for label, values in results.items()}
    print(json.dumps({
        "preset": args.model or args.preset, "size": args.size, "frames": args.frames, "threads": args.threads,
        "dtype": args.dtype, "A": {"source": args.ab[0], "s_per_frame": results["A"], "median": medians["A"]},
        "B": {"source": args.ab[1], "s_per_frame": results["B"], "median": medians["B"]},
        "speedup_B_over_A": round(medians["A"] / medians["B"], 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
