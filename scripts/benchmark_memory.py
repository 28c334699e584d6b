#!/usr/bin/env python
"""Peak memory of streaming segmentation versus video length.

For each length N (default 30, 150, 300) a synthetic 360x640 video of moving shapes is written to a temporary
MP4, then a fresh child process segments it with `segment_video` (decoded frame by frame) and reports its
peak RSS (`resource.getrusage(...).ru_maxrss`). Prints one line per length and a JSON line with the ratios to
the shortest video. `--in-memory` measures the non-streaming path (`model(**processor(all frames))`) instead,
for contrast: it grows with N, as the original does.

    python scripts/benchmark_memory.py                       # tiny random model (fast)
    python scripts/benchmark_memory.py --config r50          # full-size GenVIS R-50 (random weights; slow on CPU)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def synthetic_video(path: Path, frames: int, height: int, width: int) -> None:
    from genvis_hf.processing.video_io import write_video

    def generate():
        rng = np.random.default_rng(0)
        background = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        for t in range(frames):
            frame = background.copy()
            for k, color in enumerate([(230, 60, 60), (60, 200, 90), (70, 90, 230)]):
                cy = int(height * (0.3 + 0.2 * k))
                cx = int((t * (4 + 2 * k) + 80 * k) % width)
                frame[max(cy - 30, 0) : cy + 30, max(cx - 40, 0) : cx + 40] = color
            yield frame

    write_video(path, generate(), fps=25)


def build_model(config_name: str):
    import torch

    from genvis_hf import GenVISConfig, GenVISForVideoInstanceSegmentation

    torch.manual_seed(0)
    if config_name == "r50":
        config = GenVISConfig.from_preset("genvis-r50-ytvis19")
    else:
        config = GenVISConfig(
            resnet_width_per_group=8, resnet_stem_out_channels=16, resnet_res2_out_channels=32, pixel_decoder_dim=64,
            mask_dim=64, pixel_decoder_encoder_layers=2, frame_decoder_hidden_dim=64, frame_decoder_ffn_dim=128,
            frame_decoder_layers=3, num_frame_queries=20, object_hidden_dim=64, object_ffn_dim=128,
            object_encoder_layers=2, object_decoder_layers=2, num_clip_queries=10, num_labels=7,
        )  # fmt: skip
    return GenVISForVideoInstanceSegmentation(config).eval()


def child(video: str, config_name: str, in_memory: bool, frames_per_call: int) -> None:
    import torch

    torch.set_num_threads(2)
    from genvis_hf import GenVISVideoProcessor
    from genvis_hf.inference import segment_video
    from genvis_hf.processing.video_io import read_video

    if frames_per_call:
        from genvis_hf.settings import set_settings

        set_settings(frames_per_call=frames_per_call)
    model = build_model(config_name)
    processor = GenVISVideoProcessor.from_model_config(model.config)
    if in_memory:
        frames = read_video(video)
        with torch.no_grad():
            outputs = model(**processor(videos=[frames], return_tensors="pt"))
        result = processor.post_process_video_instance_segmentation(outputs, target_sizes=[frames.shape[1:3]])[0]
        count = len(result["scores"])
    else:
        count = len(segment_video(model, processor, video, progress=False))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": round(peak_mb, 1), "instances": count}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[30, 150, 300])
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--config", choices=["tiny", "r50"], default="tiny")
    parser.add_argument("--in-memory", action="store_true", help="measure the non-streaming path instead")
    parser.add_argument(
        "--frames-per-call",
        type=int,
        default=0,
        help="genvis_hf.settings frames_per_call (frames per call of the per-frame stages at "
        "inference; default: the setting's, 4)",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2] == "1", int(args.child[3]))
        return

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for frames in args.frames:
            video = Path(scratch) / f"synthetic_{frames}.mp4"
            synthetic_video(video, frames, args.height, args.width)
            completed = subprocess.run(
                [sys.executable, __file__, "--child", str(video), args.config, "1" if args.in_memory else "0",
                 str(args.frames_per_call)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results[frames] = json.loads(completed.stdout.strip().splitlines()[-1])["peak_rss_mb"]
            print(f"{frames:4d} frames at {args.height}x{args.width}: peak RSS {results[frames]:.1f} MB")
    base = results[args.frames[0]]
    summary = {
        "config": args.config, "mode": "in-memory" if args.in_memory else "streaming",
        "frames_per_call": args.frames_per_call or "default",
        "size": [args.height, args.width], "peak_rss_mb": results,
        "ratio_to_shortest": {n: round(v / base, 3) for n, v in results.items()},
    }  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
