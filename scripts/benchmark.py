#!/usr/bin/env python
"""End-to-end inference speed of genvis_hf, measured the way the original is timed by
`../shared/tools/original/time_original.py`, so the two JSON lines can be compared as a ratio.

Default: full-size GenVIS R-50 (random weights), the first 36 frames of `../shared/data/videos/vtest.avi`
resized with PIL bilinear to the preset's test size (360x480 for R-50), output masks at the source size
(576x768), 2 threads, fp32, online and semi-online. Timed: normalise/pad + model + post-processing (top-k masks
at 576x768), i.e. what the original's `model(inputs)` does. One warm-up run, then `--runs` timed runs.

    python scripts/benchmark.py                                   # both modes, one JSON line
    python scripts/benchmark.py --baseline-json original.json     # + ratios against the original's line(s)
    python scripts/benchmark.py --model DIR --frames 72 --device cuda --dtype bfloat16

Per-stage seconds per frame come from forward hooks (backbone, pixel_decoder (of which msdeform_encoder),
frame_decoder, object_decoder, other = the rest: pre/post-processing, mask products). GFLOP/s are torch's
FlopCounterMode counts of one run divided by the median time.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = REPO.parent / "shared" / "data" / "videos" / "vtest.avi"
STAGES = ("backbone", "pixel_decoder", "msdeform_encoder", "frame_decoder", "object_decoder")


def cpu_name() -> str:
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        return f"{fields.get('Model name', '?').strip()} (family {fields.get('CPU family', '?').strip()})"
    except OSError:
        return platform.processor()


def load_frames(video: Path, count: int, height: int, width: int) -> tuple[np.ndarray, tuple[int, int]]:
    from genvis_hf.processing.video_io import VideoReader

    frames = []
    for frame in VideoReader(video, max_frames=count):
        source_size = frame.shape[:2]
        frames.append(np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR)))
    return np.stack(frames), source_size


def build(args):
    from genvis_hf import GenVISConfig, GenVISForVideoInstanceSegmentation, GenVISVideoProcessor

    if args.model:
        model = GenVISForVideoInstanceSegmentation.from_pretrained(args.model)
    else:
        torch.manual_seed(0)
        model = GenVISForVideoInstanceSegmentation(GenVISConfig.from_preset(args.preset))
    if args.backend:
        model.set_deformable_attention_backend(args.backend)
    model = model.to(args.device, dtype=getattr(torch, args.dtype)).eval()
    processor = (GenVISVideoProcessor.from_model_config(model.config) if args.model
                 else GenVISVideoProcessor.from_preset(args.preset))  # fmt: skip
    return model, processor


class StageTimer:
    """Wall time spent inside chosen modules (and methods), accumulated over calls; a stage entered again from
    inside itself is counted once."""

    def __init__(self, modules: dict[str, torch.nn.Module], synchronize):
        self.totals: dict[str, float] = {}
        self.synchronize = synchronize
        self.started: dict[str, float] = {}
        self.depth: dict[str, int] = {}
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda m, i, name=name: self._start(name))
            module.register_forward_hook(lambda m, i, o, name=name: self._stop(name))

    def time_method(self, owner, method: str, name: str) -> None:
        """Also count calls of `owner.method` (e.g. work a stage does for several clips outside its forward)."""
        original = getattr(owner, method)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            self._start(name)
            try:
                return original(*args, **kwargs)
            finally:
                self._stop(name)

        setattr(owner, method, timed)

    def _start(self, name):
        self.depth[name] = self.depth.get(name, 0) + 1
        if self.depth[name] == 1:
            self.synchronize()
            self.started[name] = time.perf_counter()

    def _stop(self, name):
        self.depth[name] -= 1
        if self.depth[name] == 0:
            self.synchronize()
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - self.started[name]


def run_once(model, processor, frames, target_size, clip_length):
    inputs = processor(videos=[frames], do_resize=False, return_tensors="pt")
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    outputs = model(**inputs, clip_length=clip_length)
    return processor.post_process_video_instance_segmentation(outputs, target_sizes=[target_size])[0]


def measure_mode(model, processor, frames, target_size, clip_length, runs, device, split_stages=True) -> dict:
    """Seconds per frame over `runs` timed runs after one warm-up; with `split_stages`, also per stage (hooks on
    the stage modules: not with a compiled model, whose hooks dynamo would trace)."""
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    inner = model.model
    stage_modules = {"backbone": inner.backbone, "pixel_decoder": inner.pixel_decoder,
                     "frame_decoder": inner.frame_decoder, "object_decoder": inner.object_decoder}  # fmt: skip
    timer = StageTimer(stage_modules if split_stages else {}, synchronize)
    if split_stages:
        # what the fast path's clip loop calls instead of the modules' forward (genvis_hf/optimization/clip_loop.py)
        timer.time_method(inner.pixel_decoder, "forward_features", "pixel_decoder")
        if hasattr(inner.frame_decoder, "forward_inference"):
            timer.time_method(inner.frame_decoder, "forward_inference", "frame_decoder")
        timer.time_method(inner.object_decoder, "encode_clips", "object_decoder")  # a chunk's clips encoded at once
        timer.time_method(inner.object_decoder, "decode", "object_decoder")
    encoder_timer = _EncoderTimer(inner.pixel_decoder, synchronize) if split_stages else None
    count = len(frames)
    times, stages = [], []
    with torch.inference_mode():
        for run in range(runs + 1):
            timer.totals.clear()
            if encoder_timer is not None:
                encoder_timer.total = 0.0
            synchronize()
            start = time.perf_counter()
            result = run_once(model, processor, frames, target_size, clip_length)
            synchronize()
            elapsed = time.perf_counter() - start
            if run == 0:
                print(f"  clip {clip_length}, warm-up: {elapsed:.2f} s", file=sys.stderr)
                continue
            times.append(elapsed / count)
            if split_stages:
                split = {k: v / count for k, v in timer.totals.items()}
                split["msdeform_encoder"] = encoder_timer.total / count
                split["other"] = elapsed / count - sum(timer.totals.values()) / count
                stages.append(split)
            print(f"  clip {clip_length}, run {run}: {elapsed:.2f} s, {elapsed / count:.4f} s/frame, "
                  f"{len(result['scores'])} instances", file=sys.stderr)  # fmt: skip
    median = statistics.median(times)
    result = {
        "median_s_per_frame": round(median, 4),
        "min_s_per_frame": round(min(times), 4),
        "max_s_per_frame": round(max(times), 4),
        "frames_per_s": round(1.0 / median, 3),
        "runs": [round(t, 4) for t in times],
    }
    if split_stages:
        result["stages_s_per_frame"] = {
            k: round(statistics.median(s[k] for s in stages), 4) for k in (*STAGES, "other")
        }
    return result


class _EncoderTimer:
    """Time of the deformable encoder layers inside the pixel decoder."""

    def __init__(self, pixel_decoder, synchronize):
        self.total = 0.0
        layers = pixel_decoder.encoder_layers
        first, last = layers[0], layers[-1]
        first.register_forward_pre_hook(lambda m, i: self._start(synchronize))
        last.register_forward_hook(lambda m, i, o: self._stop(synchronize))

    def _start(self, synchronize):
        synchronize()
        self.started = time.perf_counter()

    def _stop(self, synchronize):
        synchronize()
        self.total += time.perf_counter() - self.started


def measure_fp32_peak(device: str, repeats: int = 20) -> float:
    """Practical fp32 peak of this machine, GFLOP/s: the best of repeated 3x3 convolutions, 256 -> 256 channels
    on a 96x120 map in channels-last (oneDNN's best case on CPUs; see ../shared/PERF_NOTES.md)."""
    x = torch.randn(1, 256, 96, 120, device=device).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(256, 256, 3, 3, device=device).contiguous(memory_format=torch.channels_last)
    flops = 2 * 256 * 256 * 9 * 96 * 120
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            synchronize()
            start = time.perf_counter()
            torch.nn.functional.conv2d(x, weight, padding=1)
            synchronize()
            best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def count_flops(model, processor, frames, target_size, clip_length) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # FlopCounterMode's per-module tracking hooks autograd: count with grad mode on but nothing requiring grad
    # (under no_grad / inference_mode it fails on tensors without grad_fn).
    model.requires_grad_(False)
    with counter:
        run_once(model, processor, frames, target_size, clip_length)
    per_module = counter.get_flop_counts()
    total = sum(counter.get_flop_counts()["Global"].values())
    backbone_key = next((k for k in per_module if k.endswith("model.backbone")), None)
    backbone = sum(per_module[backbone_key].values()) if backbone_key else 0
    return {"total": total / len(frames), "backbone": backbone / len(frames)}


def compare_bf16(args, frames, source_size) -> dict:
    """Speed-up of the bf16 path over fp32 and its deviation, on the same frames: label agreement (share of fp32
    instances, matched by their clip query, that bf16 also returns with the same label) and the video mask IoU of
    the matched instances (sum over frames of intersections / sum of unions)."""
    results, times = {}, {}
    for dtype in ("float32", "bfloat16"):
        args.dtype = dtype
        model, processor = build(args)
        clip_length = model.config.clip_length
        with torch.inference_mode():
            run_once(model, processor, frames, source_size, clip_length)  # warm-up
            durations = []
            for _ in range(args.runs):
                start = time.perf_counter()
                results[dtype] = run_once(model, processor, frames, source_size, clip_length)
                durations.append((time.perf_counter() - start) / len(frames))
        times[dtype] = statistics.median(durations)
    reference, candidate = results["float32"], results["bfloat16"]
    matches, ious = 0, []
    for index, (query, label) in enumerate(zip(reference["queries"].tolist(), reference["labels"].tolist())):
        same = [j for j, (q, lab) in enumerate(zip(candidate["queries"].tolist(), candidate["labels"].tolist()))
                if q == query and lab == label]  # fmt: skip
        if not same:
            continue
        matches += 1
        a, b = reference["masks"][index], candidate["masks"][same[0]]
        union = (a | b).sum().item()
        ious.append((a & b).sum().item() / union if union else 1.0)
    return {
        "fp32_s_per_frame": round(times["float32"], 4), "bf16_s_per_frame": round(times["bfloat16"], 4),
        "bf16_speedup": round(times["float32"] / times["bfloat16"], 2),
        "label_agreement": round(matches / max(len(reference["labels"]), 1), 3),
        "mask_iou_mean": round(statistics.mean(ious), 4) if ious else None,
        "mask_iou_min": round(min(ious), 4) if ious else None,
        "score_max_abs_diff": round(max(abs(a - b) for a, b in zip(sorted(reference["scores"].tolist()),
                                                                   sorted(candidate["scores"].tolist()))), 4),
    }  # fmt: skip


def _compiled_state(model) -> dict:
    """What `compile_for_inference` put on the model's modules (compiled methods, compiled `__call__`s)."""
    from genvis_hf.optimization.compile import COMPILED_ATTRIBUTES

    state = {}
    for module in model.modules():
        saved = {name: module.__dict__[name] for name in COMPILED_ATTRIBUTES if name in module.__dict__}
        if getattr(module, "_compiled_call_impl", None) is not None:
            saved["_compiled_call_impl"] = module._compiled_call_impl
        if saved:
            state[module] = saved
    return state


def _use_compiled(state: dict, compiled: bool) -> None:
    """Switch the modules of `state` between their compiled and their eager stages."""
    for module, saved in state.items():
        for name, value in saved.items():
            if name == "_compiled_call_impl":
                module._compiled_call_impl = value if compiled else None
            elif compiled:
                module.__dict__[name] = value
            else:
                module.__dict__.pop(name, None)


def compare_compile(args, frames, source_size) -> dict:
    """Speed of `model.compile_for_inference(fullgraph=True)` (inductor) against the same model eager, in one
    process, on the same frames, per mode: after the compilation (the first compiled run, timed apart), eager and
    compiled runs alternate (`--runs` of each), so that a machine's drift affects both alike. No stage hooks."""
    model, processor = build(args)
    modes = {mode: 1 if mode == "online" else 3 for mode in args.modes}
    report = {}
    with torch.inference_mode():
        references = {mode: run_once(model, processor, frames, source_size, clip) for mode, clip in modes.items()}
    model.compile_for_inference(fullgraph=True)
    state = _compiled_state(model)
    for mode, clip_length in modes.items():
        with torch.inference_mode():
            start = time.perf_counter()
            result = run_once(model, processor, frames, source_size, clip_length)
            compile_s = time.perf_counter() - start
            times = {"eager": [], "compiled": []}
            for _ in range(args.runs):
                for variant in ("eager", "compiled"):
                    _use_compiled(state, variant == "compiled")
                    start = time.perf_counter()
                    run_once(model, processor, frames, source_size, clip_length)
                    times[variant].append((time.perf_counter() - start) / len(frames))
            _use_compiled(state, True)
        eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
        same_labels = torch.equal(references[mode]["labels"], result["labels"])
        report[mode] = {
            "eager_s_per_frame": round(eager_s, 4), "compiled_s_per_frame": round(compiled_s, 4),
            "eager_runs": [round(t, 4) for t in times["eager"]], "compiled_runs": [round(t, 4) for t in times["compiled"]],
            "compiled_over_eager_speedup": round(eager_s / compiled_s, 3),
            "first_compiled_run_s": round(compile_s, 1),
            "labels_equal": same_labels,
            "score_max_abs_diff": float((references[mode]["scores"] - result["scores"]).abs().max()) if same_labels else None,
        }  # fmt: skip
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="genvis-r50-ytvis19")
    parser.add_argument("--model", help="a converted model directory instead of random weights")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument(
        "--frames-npy",
        type=Path,
        help="pre-decoded, pre-resized frames [T, H, W, 3] uint8 (machines "
        "without a video decoder); with --source-size H W, the output mask size",
    )
    parser.add_argument("--source-size", type=int, nargs=2, default=[576, 768])
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["online", "semi-online"], choices=["online", "semi-online"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--backend", help="deformable attention backend (default: the config's, auto)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument("--baseline-json", type=Path, help="JSON line(s) of time_original.py to compare with")
    parser.add_argument(
        "--compare-bf16",
        action="store_true",
        help="only: bf16 vs fp32 speed-up and deviation (label agreement, mask IoU) at the model's mode",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="only: the opt-in torch.compile path (model.compile_for_inference()) vs the same model "
        "eager, per mode: s/frame, compile time (the warm-up), deviation",
    )
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="do not tune glibc malloc (genvis-hf commands tune it, see genvis_hf.utils.cpu)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.default_allocator:
        from genvis_hf.utils import tune_memory_allocator

        tune_memory_allocator()
    if args.compare_bf16 or args.compile:  # one comparison instead of the full report
        config_size = build(args)[1].size["shortest_edge"]
        frames, source_size = load_frames(args.video, args.frames, config_size, round(config_size * 4 / 3))
        header = {"cpu": cpu_name(), "device": args.device, "threads": args.threads,
                  "model": args.model or args.preset, "frames": args.frames}  # fmt: skip
        if args.compare_bf16:
            print(json.dumps({**header, **compare_bf16(args, frames, source_size)}))
        else:
            print(json.dumps({**header, "dtype": args.dtype, "compile": compare_compile(args, frames, source_size)}))
        return

    model, processor = build(args)
    height = processor.size["shortest_edge"]
    if args.frames_npy:
        frames, source_size = np.load(args.frames_npy)[: args.frames], tuple(args.source_size)
    else:
        frames, source_size = load_frames(args.video, args.frames, height, round(height * 4 / 3))
    report = {
        "cpu": cpu_name(), "device": args.device, "dtype": args.dtype, "threads": args.threads,
        "model": args.model or args.preset, "frames": args.frames, "input_size": list(frames.shape[1:3]),
        "tuned_allocator": not args.default_allocator,
        "output_size": list(source_size), "deformable_attention_backend": model.deformable_attention_backend_in_use,
        "modes": {},
    }  # fmt: skip
    for mode in args.modes:
        clip_length = 1 if mode == "online" else 3
        result = measure_mode(model, processor, frames, source_size, clip_length, args.runs, args.device)
        if not args.no_flops:
            flops = count_flops(model, processor, frames, source_size, clip_length)
            stage = result["stages_s_per_frame"]
            result["gflop_per_frame"] = round(flops["total"] / 1e9, 2)
            result["gflop_per_s"] = round(flops["total"] / 1e9 / result["median_s_per_frame"], 1)
            result["backbone_gflop_per_frame"] = round(flops["backbone"] / 1e9, 2)
            result["backbone_gflop_per_s"] = round(flops["backbone"] / 1e9 / max(stage["backbone"], 1e-9), 1)
        report["modes"][mode] = result
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if not args.no_flops:
        peak = measure_fp32_peak(args.device)
        report["fp32_peak_gflop_per_s"] = round(peak, 1)
        for result in report["modes"].values():
            result["fraction_of_fp32_peak"] = round(result["gflop_per_s"] / peak, 3)

    if args.baseline_json:
        baselines = [
            json.loads(line) for line in args.baseline_json.read_text().splitlines() if line.strip().startswith("{")
        ]
        ratios = {}
        for baseline in baselines:
            mode = baseline["mode"].replace("_", "-")
            if mode in report["modes"]:
                ours = report["modes"][mode]["median_s_per_frame"]
                ratios[mode] = {"original_s_per_frame": baseline["median_s_per_frame"], "ours_s_per_frame": ours,
                                "speedup": round(baseline["median_s_per_frame"] / ours, 2)}  # fmt: skip
        report["vs_original"] = ratios
        for mode, ratio in ratios.items():
            print(f"{mode}: original {ratio['original_s_per_frame']:.3f} s/frame, ours {ratio['ours_s_per_frame']:.3f} "
                  f"s/frame -> {ratio['speedup']:.2f}x", file=sys.stderr)  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    main()
