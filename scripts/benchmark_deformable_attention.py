#!/usr/bin/env python
"""Time every available multi-scale deformable attention backend at the full-size R-50 pixel-decoder shapes.

Shapes: a 360x640 input gives the deformable encoder three levels at strides 8/16/32 (45x80, 23x40, 12x20:
S = 4760 tokens), 8 heads of 32 channels (256), 4 points per head and level, and one query per token
(Lq = S), for batch 1 (online) and 3 (semi-online clip of 3 frames). Sampling locations are each token's own
pixel centre plus offsets of a few pixels (as a trained encoder's are), so memory access is realistic.

For each backend and batch: the median over `--repeats` runs (after warm-up, in this one process) of the
forward (no grad) and of forward + backward, and the ratio to the `torch` backend measured in the same run.
Prints a table, then one JSON line.

    python scripts/benchmark_deformable_attention.py                 # CPU, torch's default thread count
    python scripts/benchmark_deformable_attention.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time

import torch

from genvis_hf.modeling.deformable_attention import available_backends, multi_scale_deformable_attention

LEVELS = [(45, 80), (23, 40), (12, 20)]  # 360x640 at strides 8, 16, 32
HEADS, HEAD_DIM, POINTS = 8, 32, 4


def make_inputs(batch: int, device: torch.device, seed: int = 0):
    """Inputs of the encoder's deformable self-attention: (value, spatial_shapes, spatial_shapes_list,
    level_start_index, sampling_locations, attention_weights)."""
    generator = torch.Generator().manual_seed(seed)
    num_values = sum(h * w for h, w in LEVELS)
    levels = len(LEVELS)
    centres = []
    for height, width in LEVELS:
        ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
        centres.append(torch.stack([xs.flatten() / width, ys.flatten() / height], -1))
    reference = torch.cat(centres)  # [S, 2]
    sizes = torch.tensor([[w, h] for h, w in LEVELS], dtype=torch.float32)  # [L, 2] (x, y) normaliser
    offsets = torch.randn(batch, num_values, HEADS, levels, POINTS, 2, generator=generator) * 2.0  # pixels
    locations = reference[None, :, None, None, None, :] + offsets / sizes[None, None, None, :, None, :]
    weights = torch.rand(batch, num_values, HEADS, levels * POINTS, generator=generator).softmax(-1)
    value = torch.randn(batch, num_values, HEADS, HEAD_DIM, generator=generator)
    shapes = torch.tensor(LEVELS, dtype=torch.long)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    return (value.to(device), shapes.to(device), LEVELS, starts.to(device), locations.to(device),
            weights.view(batch, num_values, HEADS, levels, POINTS).to(device))  # fmt: skip


def median_seconds(function, device: torch.device, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_backward(backend: str, inputs, grad_output):
    value, shapes, shapes_list, starts, locations, weights = inputs
    leaves = [t.detach().requires_grad_(True) for t in (value, locations, weights)]
    output = multi_scale_deformable_attention(leaves[0], shapes, shapes_list, starts, leaves[1], leaves[2], backend)
    output.backward(grad_output)


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        keys = ("Model name", "CPU family", "Model", "CPU(s)")
        return " ".join(f"{key}={fields[key].strip()}" for key in keys if key in fields)
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 7 CPU, 50 GPU)")
    parser.add_argument("--backends", nargs="+", default=None, help="default: every available backend")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--no-backward", action="store_true")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (50 if device.type == "cuda" else 7)
    backends = args.backends or available_backends(device)
    if "torch" not in backends:
        backends = [*backends, "torch"]
    backends = ["torch", *[b for b in backends if b != "torch"]]  # torch first: the baseline of every ratio
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()

    results = []
    for batch in args.batch_sizes:
        inputs = make_inputs(batch, device)
        with torch.no_grad():
            reference = multi_scale_deformable_attention(*inputs, backend="torch")
        grad_output = torch.randn_like(reference)
        for backend in backends:
            with torch.no_grad():
                error = (multi_scale_deformable_attention(*inputs, backend=backend) - reference).abs().max().item()

                def forward(backend=backend, inputs=inputs):
                    multi_scale_deformable_attention(*inputs, backend=backend)

                forward_s = median_seconds(forward, device, repeats)
            backward_s = None
            if not args.no_backward:
                backward_s = median_seconds(lambda backend=backend, inputs=inputs, grad_output=grad_output: forward_backward(backend, inputs, grad_output),
                                            device, repeats)  # fmt: skip
            results.append({"backend": backend, "batch": batch, "forward_ms": forward_s * 1e3,
                            "forward_backward_ms": backward_s * 1e3 if backward_s is not None else None,
                            "max_abs_diff_vs_torch": error})  # fmt: skip
        baseline = next(r for r in results if r["batch"] == batch and r["backend"] == "torch")
        for r in results:
            if r["batch"] == batch:
                r["forward_speedup_vs_torch"] = baseline["forward_ms"] / r["forward_ms"]
                if r["forward_backward_ms"] is not None:
                    r["forward_backward_speedup_vs_torch"] = baseline["forward_backward_ms"] / r["forward_backward_ms"]

    threads = torch.get_num_threads()
    print(f"multi-scale deformable attention, levels {LEVELS}, {HEADS} heads x {HEAD_DIM} ch, {POINTS} points, "
          f"Lq = S = {sum(h * w for h, w in LEVELS)}; device {device} ({hardware}); torch {torch.__version__}, "
          f"{threads} threads; median of {repeats}")  # fmt: skip
    print(f"{'backend':8} {'batch':>5} {'fwd ms':>9} {'x torch':>8} {'fwd+bwd ms':>11} {'x torch':>8} {'max|d|':>9}")
    nan = float("nan")
    for r in results:
        backward = r["forward_backward_ms"] if r["forward_backward_ms"] is not None else nan
        print(f"{r['backend']:8} {r['batch']:5d} {r['forward_ms']:9.2f} {r['forward_speedup_vs_torch']:8.1f} "
              f"{backward:11.2f} {r.get('forward_backward_speedup_vs_torch', nan):8.1f} "
              f"{r['max_abs_diff_vs_torch']:9.1e}")  # fmt: skip
    print(json.dumps({"benchmark": "deformable_attention", "device": str(device), "hardware": hardware,
                      "torch": torch.__version__, "threads": threads, "repeats": repeats,
                      "levels": LEVELS, "heads": HEADS, "head_dim": HEAD_DIM, "points": POINTS,
                      "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
