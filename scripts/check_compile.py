#!/usr/bin/env python
"""`model.compile_for_inference(fullgraph=True)` with inductor on the converted fixture models, against eager.

    python scripts/check_compile.py            # both fixtures of ../shared/fixtures/genvis_reference (minutes)

For each fixture (the ORIGINAL GenVIS's small random-weight checkpoints), this converts the checkpoint, runs the
fixture's video through the eager fast path, compiles the model (every per-frame stage in one graph: a graph
break is an error), runs the video twice more, and prints one JSON line per fixture: the compile time, the largest
difference of every output tensor from eager in each compiled run, and the final scores' largest difference from
the original's. Exit status 1 when a compiled output differs from eager by more than 1e-4. Inductor generates
C++ code on the first run (minutes on 2 cores); the default test suite checks the one-graph capture with dynamo's
`eager` backend instead (tests/test_optimization.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "genvis_reference"
TOLERANCE = 1e-4


def _tensors(outputs) -> dict[str, torch.Tensor]:
    return {name: value for name, value in outputs.items() if isinstance(value, torch.Tensor)}


def check(fixture: Path, workdir: Path) -> dict:
    from transformers import AutoVideoProcessor

    from genvis_hf import GenVISForVideoInstanceSegmentation
    from genvis_hf.conversion import convert_checkpoint

    output_dir = workdir / fixture.name
    convert_checkpoint(fixture / "model_final.pth", output_dir, original_config=fixture / "config.yaml")
    model = GenVISForVideoInstanceSegmentation.from_pretrained(output_dir).eval()
    model.set_deformable_attention_backend("jit")
    processor = AutoVideoProcessor.from_pretrained(output_dir)
    video = load_file(fixture / "input.safetensors")["video"].to(torch.uint8)
    inputs = processor(videos=[video], do_resize=False, return_tensors="pt")
    original = load_file(fixture / "outputs.safetensors")
    size = tuple(original["final/image_size"].tolist())

    def run():
        with torch.no_grad():
            outputs = model(**inputs)
        return outputs, processor.post_process_video_instance_segmentation(outputs, target_sizes=[size])[0]

    eager, eager_result = run()
    eager_tensors = _tensors(eager)
    model.compile_for_inference(fullgraph=True)
    report = {"fixture": fixture.name, "runs": []}
    for _run in range(2):
        start = time.perf_counter()
        compiled, result = run()
        differences = {
            name: float((value - eager_tensors[name]).abs().max()) if value.numel() else 0.0
            for name, value in _tensors(compiled).items()
        }
        report["runs"].append({
            "seconds": round(time.perf_counter() - start, 1),
            "max_abs_diff_from_eager": {name: float(f"{value:.3g}") for name, value in differences.items()},
            "labels_equal_eager": torch.equal(result["labels"], eager_result["labels"]),
            "final_scores_max_abs_diff_from_original": float(
                (result["scores"].sort(descending=True).values - original["final/pred_scores"].sort(descending=True).values)
                .abs().max()
            ),
        })  # fmt: skip
    report["within_tolerance"] = all(
        max(run["max_abs_diff_from_eager"].values()) <= TOLERANCE and run["labels_equal_eager"]
        for run in report["runs"]
    )
    torch._dynamo.reset()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixtures", nargs="+", default=["r50_online", "r50_semi_online"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ok = True
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.fixtures:
            report = check(FIXTURES / name, Path(workdir))
            print(json.dumps(report), flush=True)
            ok = ok and report["within_tolerance"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
