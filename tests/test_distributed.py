"""`genvis-hf evaluate` and `genvis-hf segment` across processes (`accelerate launch`): each process takes its
share of the videos, the main process gathers; every video once, the same files as one process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from genvis_hf.assets import tiny_model_path
from genvis_hf.cli import main
from genvis_hf.distributed import (
    VideoSplit,
    launched_world_size,
    single_process_launch_note,
)


def _accelerate_launch(*command: str, cwd) -> subprocess.CompletedProcess:
    """`accelerate launch` with 2 CPU processes through torchrun (`--multi_gpu`; `--cpu` would start only one
    process without an mpirun hostfile); the commands run on the CPU with one thread per process."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
              "-m", "genvis_hf.cli", *command]  # fmt: skip
    return subprocess.run(launch, check=False, capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    assert main(["make-synthetic", str(root), "--videos", "5", "--seed", "3", "--height", "96", "--width", "128",
                 "--min-frames", "4", "--max-frames", "6"]) == 0  # fmt: skip
    return root


def test_one_process_takes_every_video():
    assert launched_world_size() == 1  # the test itself is not launched with several processes
    split = VideoSplit("cpu")
    assert not split.distributed and split.is_main_process and split.share(3) == [0, 1, 2]
    assert split.gather_on_main(["a"]) == [["a"]] and split.gather_everywhere(2) == [2]
    assert split.describe([3], "evaluated") == "3 videos evaluated by 1 process (process 0: 3)"


def test_a_single_process_cpu_launch_is_pointed_out(monkeypatch):
    """`accelerate launch --cpu --num_processes 2` starts one process (no mpirun hostfile): the commands say so."""
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    assert single_process_launch_note() is None
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")  # what `accelerate launch --cpu` sets
    assert "--multi_gpu --num_processes N" in single_process_launch_note()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert single_process_launch_note() is None


def test_evaluate_on_two_processes_equals_one_process(synthetic_set, tmp_path):
    common = [
        "evaluate",
        "--model",
        str(tiny_model_path()),
        "--images",
        str(synthetic_set / "JPEGImages"),
        "--annotations",
        str(synthetic_set / "annotations.json"),
        "--device",
        "cpu",
        "--num-threads",
        "1",
    ]
    assert main([*common, "--output-dir", str(tmp_path / "one"), "--cache-dir", str(tmp_path / "cache1")]) == 0

    launched = _accelerate_launch(*common, "--output-dir", str(tmp_path / "two"), "--cache-dir",
                                  str(tmp_path / "cache2"), cwd=tmp_path)  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    summary = [line for line in launched.stdout.splitlines() if "videos evaluated by" in line]
    assert len(summary) == 1, launched.stdout  # printed by the main process only
    assert "5 videos evaluated by 2 processes (process 0: 3, process 1: 2)" in summary[0]

    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert one == two and one["AP"] > 0.3
    assert json.loads(launched.stdout.strip().splitlines()[-1]) == {
        k: v for k, v in one.items() if k != "per_category_AP"
    }
    results_one = json.loads((tmp_path / "one" / "results.json").read_text())
    results_two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert results_two == results_one  # same entries in the same (data set) order
    videos = [v["id"] for v in json.loads((synthetic_set / "annotations.json").read_text())["videos"]]
    per_video = {video: sum(entry["video_id"] == video for entry in results_two) for video in videos}
    assert set(per_video.values()) == {10}  # every video once: top-10 instances each, no video twice
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["metrics.json", "results.json"]


def test_segment_on_two_processes_splits_the_inputs(synthetic_set, tmp_path):
    videos = sorted((synthetic_set / "JPEGImages").iterdir())[:3]
    (tmp_path / "broken.mp4").write_text("not a video")
    inputs = [str(v) for v in videos] + [str(tmp_path / "broken.mp4")]
    options = ["--max-frames", "4", "--no-progress"]
    torch.set_num_threads(1)  # as each launched process (OMP_NUM_THREADS=1): identical float rounding
    assert main(["segment", *inputs[:3], "--output-dir", str(tmp_path / "one"), *options]) == 0

    launched = _accelerate_launch("segment", *inputs, "--output-dir", str(tmp_path / "two"), *options, cwd=tmp_path)
    assert launched.returncode != 0  # one input was bad: the job fails, as one process would
    errors = [line for line in launched.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {tmp_path / 'broken.mp4'}: not a readable video"), errors
    assert "4 videos segmented by 2 processes (process 0: 2, process 1: 2)" in launched.stdout
    done = [line for line in launched.stdout.splitlines() if " instances -> " in line]
    assert sorted(line.split(":")[0] for line in done) == sorted(inputs[:3])  # each good input once
    names = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert names == sorted(f"{v.name}.json" for v in videos)
    for video in videos:
        assert (tmp_path / "two" / f"{video.name}.json").read_bytes() == (
            tmp_path / "one" / f"{video.name}.json"
        ).read_bytes()
