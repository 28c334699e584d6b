"""README.md's Python snippets run as written: the bundled model is installed in a fresh Hugging Face cache under the
names they load, `video.mp4` is the bundled demo video, and each snippet runs in its own offline process."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from genvis_hf.assets import demo_frames, tiny_model_path
from genvis_hf.hub.cache import install_to_cache
from genvis_hf.processing.video_io import write_video

SNIPPETS = re.findall(r"^```python\n(.*?)^```", (REPO_ROOT / "README.md").read_text(), flags=re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    names = sorted(set(re.findall(r'"(genvis-[a-z0-9-]+)"', "".join(SNIPPETS))))
    assert names, "the README's snippets load no model by name"
    for name in names:
        install_to_cache(tiny_model_path(), name, cache_dir=root / "hf_home" / "hub")
    write_video(root / "video.mp4", demo_frames(), fps=10)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_HOME=str(root / "hf_home"), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT / "src"), OMP_NUM_THREADS="1"
    )
    return root, env


def test_the_readme_has_the_snippets_this_test_knows():
    assert len(SNIPPETS) == 3
    assert "AutoModelForVideoInstanceSegmentation.from_pretrained" in SNIPPETS[0] and "segment_video" in SNIPPETS[0]
    assert 'pipeline("video-instance-segmentation"' in SNIPPETS[1]
    assert "restore_reference()" in SNIPPETS[2] and "settings_override(optimize_on_eval=False)" in SNIPPETS[2]


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs_as_written(workspace, index):
    root, env = workspace
    completed = subprocess.run([sys.executable, "-c", SNIPPETS[index]], cwd=root, env=env, capture_output=True,
                               text=True, timeout=300, check=False)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    frames = len(demo_frames())
    if index == 0:  # the in-memory path's masks, then the streaming path's: same instances, same frames
        shapes = re.findall(r"torch\.Size\(\[(\d+), (\d+), \d+, \d+\]\)", completed.stdout)
        assert [int(t) for _, t in shapes] == [frames, frames], completed.stdout
        assert "'circle'" in completed.stdout  # the bundled model's class names
    if index == 2:  # the fast path is on after from_pretrained, off under the setting
        assert completed.stdout.split() == ["True", "False"], completed.stdout
    assert "Traceback" not in completed.stderr
