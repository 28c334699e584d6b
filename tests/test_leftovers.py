"""Nothing is left behind: files being written have no name until complete, so SIGKILL leaves nothing, and
SIGTERM (`timeout`, `docker stop`) unwinds the command like Ctrl-C, removing what it made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO_ROOT

from genvis_hf.utils import files
from genvis_hf.utils.files import PendingFile, file_mode, owned_name, remove_abandoned


def _entries(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("unnamed", [True, False], ids=["O_TMPFILE", "named-fallback"])
def test_pending_file_is_invisible_until_published(tmp_path, monkeypatch, unnamed):
    if not unnamed:
        monkeypatch.setattr(files, "_open_unnamed", lambda directory: None)
    (tmp_path / "out.json").write_text("old")
    pending = PendingFile(tmp_path, name_hint="out.json", suffix=".json")
    pending.path.write_text("new")
    hidden = [name for name in _entries(tmp_path) if name != "out.json"]
    if unnamed:
        assert hidden == [] and str(pending.path).startswith("/proc/self/fd/")
    else:
        assert hidden == [pending.path.name] and pending.path.name.startswith(f".out.json.part-{os.getpid()}-")
    assert (tmp_path / "out.json").read_text() == "old"
    pending.publish(tmp_path / "out.json")
    assert _entries(tmp_path) == ["out.json"] and (tmp_path / "out.json").read_text() == "new"
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == file_mode()  # 0644 under umask 022, not 0600
    discarded = PendingFile(tmp_path, name_hint="x")
    discarded.path.write_text("draft")
    discarded.discard()
    assert _entries(tmp_path) == ["out.json"]


def test_abandoned_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(dead.stdout)
    (tmp_path / f".v.part-{dead_pid}-0a0b.mp4").write_text("left by a killed process")
    (tmp_path / f".v.part-{dead_pid}-0c0d").mkdir()
    mine = tmp_path / owned_name(".v.part-")
    mine.write_text("still being written")
    removed = remove_abandoned(tmp_path, ".v.part-")
    assert sorted(p.name for p in removed) == [f".v.part-{dead_pid}-0a0b.mp4", f".v.part-{dead_pid}-0c0d"]
    assert _entries(tmp_path) == [mine.name]


def test_replacing_an_output_removes_what_a_killed_replacement_left(tmp_path):
    """Publishing over an existing file links the new one under a hidden owned name, then renames it over the old
    one: a SIGKILL between the two leaves that name behind, which the next publish to the same output removes."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    (tmp_path / "out.json").write_text("old")
    (tmp_path / f".out.json.part-{int(dead.stdout)}-0a0b").write_text("left by a killed replacement")
    pending = PendingFile(tmp_path, name_hint="out.json")
    pending.path.write_text("new")
    pending.publish(tmp_path / "out.json")
    assert _entries(tmp_path) == ["out.json"] and (tmp_path / "out.json").read_text() == "new"


# A `genvis-hf segment --demo --overlay` run that signals itself at a chosen moment: after the first clip's
# features went to the spill file, or after the overlay writer took 3 frames (the results JSON is complete).
_DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    import genvis_hf.inference as inference
    import genvis_hf.processing.visualize as visualize
    from genvis_hf import cli

    sig, phase = getattr(signal, sys.argv[1]), sys.argv[2]
    if phase == "spill":
        append = inference._FeatureSpill.append
        def killing_append(self, features):
            append(self, features)
            os.kill(os.getpid(), sig)
        inference._FeatureSpill.append = killing_append
    else:
        overlay = visualize.overlay_video
        def killing_overlay(*args):
            for index, frame in enumerate(overlay(*args)):
                if index == 3:
                    os.kill(os.getpid(), sig)
                yield frame
        visualize.overlay_video = killing_overlay
    sys.exit(cli.main(sys.argv[3:]))
    """
)


@pytest.mark.parametrize("phase", ["spill", "overlay"])
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_killed_segment_leaves_no_spill_or_partial_file(tmp_path, sig, phase):
    temp, out = tmp_path / "tmp", tmp_path / "out"
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp), PYTHONPATH=str(REPO_ROOT / "src"), OMP_NUM_THREADS="1")
    completed = subprocess.run(
        [sys.executable, "-c", _DRIVER, sig, phase, "segment", "--demo", "--overlay", "--gif", "--output-dir", str(out),
         "--no-progress"], env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if sig == "SIGKILL":
        assert completed.returncode == -signal.SIGKILL, completed.stderr[-2000:]
    else:
        assert completed.returncode == 128 + signal.SIGTERM, completed.stderr[-2000:]
        assert completed.stderr.splitlines()[-1] == "genvis-hf segment: stopped by SIGTERM"
    assert [name for name in _entries(temp) if not name.startswith("torchinductor")] == []  # no spill file
    expected = [] if phase == "spill" else ["shapes.json"]  # the JSON is complete before the overlay starts
    assert (_entries(out) if out.exists() else []) == expected
