"""``genvis-hf score``: summary lines then one JSON line; a one-line error and exit status 1 on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from evaluation_helpers import REPO_ROOT, ytvis_fixture_dir

from genvis_hf.cli import main

FIXTURE = ytvis_fixture_dir()
KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
EXPECTED = json.loads((FIXTURE / "expected_metrics.json").read_text())


def _score(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    status = main(["score", *args])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


def test_last_line_is_the_metrics_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, _ = _score(
        capsys, "--annotations", str(FIXTURE / "gt.json"), "--results", str(FIXTURE / "results.json")
    )
    assert status == 0
    metrics = json.loads(lines[-1])
    assert list(metrics)[:12] == KEYS
    for key in KEYS:
        assert metrics[key] == pytest.approx(EXPECTED["metrics"][key], abs=1e-9)
    # the lines before it are the official summarize() printout
    assert "\n".join(lines[:-1]) + "\n" == EXPECTED["summarize_printout"]


def test_quiet_output_file_and_zip(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    archive = tmp_path / "submission.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.write(FIXTURE / "results.json", arcname="results.json")
    out = tmp_path / "metrics.json"
    status, lines, _ = _score(
        capsys, "--annotations", str(FIXTURE / "gt.json"), "--results", str(archive), "--quiet", "--output", str(out)
    )
    assert status == 0 and len(lines) == 1
    assert json.loads(lines[0]) == json.loads(out.read_text())
    assert json.loads(lines[0])["AP"] == pytest.approx(EXPECTED["metrics"]["AP"], abs=1e-9)


def test_bad_input_gives_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    results = json.loads((FIXTURE / "results.json").read_text())
    results[0]["video_id"] = 4242
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(results))
    status, lines, err = _score(capsys, "--annotations", str(FIXTURE / "gt.json"), "--results", str(bad))
    assert status == 1 and lines == []
    expected = "genvis-hf score: error: results[0]: unknown video_id 4242 (not in the ground-truth videos)"
    assert err.splitlines() == [expected]
    status, _, err = _score(capsys, "--annotations", str(tmp_path / "nope.json"), "--results", str(bad))
    assert status == 1 and len(err.splitlines()) == 1 and "not found" in err


def test_module_entry_point_in_subprocess() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "genvis_hf.cli", "score", "--annotations", str(FIXTURE / "gt.json")]
    done = subprocess.run(
        [*command, "--results", str(FIXTURE / "results.json")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert set(KEYS) <= set(json.loads(done.stdout.splitlines()[-1]))
    failed = subprocess.run([*command, "--results", str(FIXTURE / "gt.json")], env=env, capture_output=True, text=True)
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == ["genvis-hf score: error: results must be a JSON list of objects, got dict"]
