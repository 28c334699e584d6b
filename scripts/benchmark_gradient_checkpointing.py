#!/usr/bin/env python
"""Peak memory and time of one training step (forward + backward) with and without gradient checkpointing.

Each mode runs in a fresh child process: it builds the model (random weights), a clip with labels, runs one warm-up
step on a small input (one-time allocations: kernels, caches) and then the measured step, and reports its peak RSS
(`ru_maxrss`), the RSS before the measured step (model, gradients of the warm-up, inputs) and the step time. The
difference of the peaks is the activation memory that checkpointing gives back. On CUDA (`--device cuda`) the
peak is `torch.cuda.max_memory_allocated` of the measured step instead.

    python scripts/benchmark_gradient_checkpointing.py                          # Swin-L-shaped, reduced (CPU, minutes)
    python scripts/benchmark_gradient_checkpointing.py --depths 2 2 18 2 --frames 5 --height 384 --width 640

Default shape: Swin-L's widths, heads and window (embed 192, heads 6/12/24/48, window 12), 200 frame queries and
the full decoders of `genvis-swinl-ytvis19`, with a shallower third stage (6 blocks instead of 18) and one video of
3 frames at 256x384, the detector trained (`freeze_detector=False`), so it fits a CPU in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _labels(num_frames: int, height: int, width: int):
    import torch

    masks = torch.zeros(3, num_frames, height, width, dtype=torch.bool)
    masks[0, :, height // 8 : height // 2, width // 8 : width // 3] = True
    masks[1, 1:, height // 2 : height - 8, width // 2 : width - 16] = True
    masks[2, :, 8 : height // 3, width // 2 : width - 40] = True
    return [{"class_labels": torch.tensor([0, 3, 7]), "masks": masks}]


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def run_mode(args: argparse.Namespace) -> dict:
    import torch

    from genvis_hf import GenVISConfig, GenVISForVideoInstanceSegmentation

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    config = GenVISConfig.from_preset(args.preset, swin_depths=args.depths, freeze_detector=False,
                                      deformable_attention_backend=args.backend)  # fmt: skip
    model = GenVISForVideoInstanceSegmentation(config).to(args.device).train()
    if args.mode == "checkpointed":
        model.activation_checkpointing_enable()  # = gradient_checkpointing_enable(), its 5.x name
    parameters = sum(p.numel() for p in model.parameters())

    def step(frames: int, height: int, width: int) -> float:
        pixel_values = torch.randn(1, frames, 3, height, width, device=args.device)
        labels = [{k: v.to(args.device) for k, v in label.items()} for label in _labels(frames, height, width)]
        model.zero_grad(set_to_none=False)  # gradients stay allocated, as in a training loop
        torch.manual_seed(1)
        start = time.perf_counter()
        model(pixel_values=pixel_values, labels=labels).loss.backward()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step(2, 64, 64)  # warm-up: kernels, caches and the gradient tensors
    before = _rss_mb()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated() / 2**20
    seconds = step(args.frames, args.height, args.width)
    result = {"mode": args.mode, "parameters_m": round(parameters / 1e6, 1), "rss_before_step_mb": round(before),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "step_s": round(seconds, 1)}  # fmt: skip
    if args.device.startswith("cuda"):
        result["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        result["cuda_step_peak_above_before_mb"] = round(result["cuda_peak_mb"] - allocated_before)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="genvis-swinl-ytvis19")
    parser.add_argument("--depths", type=int, nargs=4, default=[2, 2, 6, 2], help="Swin blocks per stage")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="auto", help="deformable attention backend")
    parser.add_argument("--mode", choices=["plain", "checkpointed"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    results = {}
    for mode in ("plain", "checkpointed"):
        command = [sys.executable, __file__, "--mode", mode, *sys.argv[1:]]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            sys.exit(f"{mode} run failed:\n{completed.stderr[-3000:]}")
        results[mode] = json.loads(completed.stdout.strip().splitlines()[-1])
        print(json.dumps(results[mode]))
    plain, checkpointed = results["plain"], results["checkpointed"]
    key = "cuda_step_peak_above_before_mb" if "cuda_peak_mb" in plain else "peak_rss_mb"
    summary = {
        "shape": {"preset": args.preset, "swin_depths": args.depths, "frames": args.frames, "size": [args.height, args.width]},
        "peak_mb": {"plain": plain[key], "checkpointed": checkpointed[key]},
        "saved_mb": plain[key] - checkpointed[key],
        "step_time_ratio": round(checkpointed["step_s"] / plain["step_s"], 2),
    }  # fmt: skip
    if key == "peak_rss_mb":
        summary["step_memory_above_before_mb"] = {
            m: r["peak_rss_mb"] - r["rss_before_step_mb"] for m, r in results.items()
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
