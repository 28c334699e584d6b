"""Quiet by default: a CPU run of `genvis-hf segment --demo` prints its result line and nothing else (no CUDA-toolkit
notice from torch's extension builder, no kernel-digest warning, no progress bars with --no-progress)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_segment_demo_on_a_cpu_prints_no_warnings(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "genvis_hf.cli", "segment", "--demo", "--no-progress", "--output-dir",
               str(tmp_path / "out")]  # fmt: skip
    warm = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert warm.returncode == 0, warm.stderr[-2000:]  # the first run may build the operators (one notice)
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stderr == "", completed.stderr[-2000:]
    lines = completed.stdout.splitlines()
    assert len(lines) == 1 and lines[0].endswith("shapes.json"), completed.stdout
