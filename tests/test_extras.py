"""The core install is inference (model, processor, pipeline, `segment`, `convert`); training, evaluation, the demo
and kernels are extras, `dev` holds all of them, and a feature whose extra is missing says which pip install brings
it in one line."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, shared_dir

from genvis_hf.cli import main
from genvis_hf.utils.extras import EXTRAS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra brings tomli
    import tomli as tomllib

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
EXTRA_ONLY = {"accelerate", "datasets", "evaluate", "scipy", "gradio"}


def _names(requirements: list[str]) -> set[str]:
    return {
        r.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower() for r in requirements
    }


def test_pyproject_extras_match_what_the_code_asks_for():
    core = _names(PYPROJECT["dependencies"])
    optional = PYPROJECT["optional-dependencies"]
    assert not core & EXTRA_ONLY  # none of the training/evaluation/demo packages in the core install
    assert {"torch", "torchvision", "transformers", "av", "pycocotools", "pyyaml", "safetensors"} <= core
    for extra, modules in EXTRAS.items():
        assert set(modules) <= _names(optional[extra]), extra
    # dev = every extra + the test tools: CI's `pip install -e ".[dev]"` (README's first command) installs all
    assert "genvis_hf[train,eval,demo,kernels]" in optional["dev"]
    assert {"pytest", "hypothesis", "tensorboard"} <= _names(optional["dev"])


# Run first in the child: the extras' packages look uninstalled (transformers' availability checks included).
_WITHOUT_EXTRAS = f"""
import importlib.abc, importlib.metadata, importlib.util, sys
BLOCKED = {sorted(EXTRA_ONLY)!r}
class Uninstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Uninstalled())
find_spec, version = importlib.util.find_spec, importlib.metadata.version
importlib.util.find_spec = lambda name, *a, **k: None if name.split(".")[0] in BLOCKED else find_spec(name, *a, **k)
def uninstalled_version(name):
    if name in BLOCKED:
        raise importlib.metadata.PackageNotFoundError(name)
    return version(name)
importlib.metadata.version = uninstalled_version
"""


def test_the_core_features_run_without_any_extra(tmp_path):
    """Inference, the pipeline, `segment` and `convert` with accelerate, datasets, evaluate, scipy and gradio
    absent (as in a fresh `pip install genvis_hf`; docs/installation figures come from such a venv)."""
    fixture = shared_dir() / "fixtures" / "genvis_reference" / "r50_online"
    code = (
        _WITHOUT_EXTRAS
        + f"""
import genvis_hf, genvis_hf.assets
from transformers import pipeline
from genvis_hf.cli import main
instances = pipeline("video-instance-segmentation", model=str(genvis_hf.assets.tiny_model_path()))(
    str(genvis_hf.assets.demo_video_path()))
print("pipeline", len(instances), tuple(genvis_hf.decode_masks(instances[0]["segmentations"]).shape))
print("segment", main(["segment", "--demo", "--output-dir", {str(tmp_path / "segment")!r}, "--no-progress"]))
print("convert", main(["convert", "--checkpoint", {str(fixture / "model_final.pth")!r}, "--config",
                       {str(fixture / "config.yaml")!r}, "--output", {str(tmp_path / "converted")!r}, "--no-verify"]))
print("train", main(["train", "--images", "x", "--annotations", "y", "--output-dir", "z"]))
"""
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
                               check=False)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.strip().splitlines()
    assert "pipeline 10 (10, 120, 160)" in lines and "segment 0" in lines and "convert 0" in lines
    assert "train 1" in lines and "pip install 'genvis_hf[train]'" in completed.stderr
    assert (tmp_path / "segment" / "shapes.json").is_file() and (tmp_path / "converted" / "config.json").is_file()


@pytest.mark.parametrize(
    ("argv", "missing", "expected"),
    [
        (["train", "--images", "x", "--annotations", "y", "--output-dir", "z"], "accelerate",
         "genvis-hf train needs accelerate, which is not installed: pip install 'genvis_hf[train]'"),
        (["evaluate", "--model", "m", "--images", "x", "--annotations", "y"], "evaluate",
         "genvis-hf evaluate needs evaluate, which is not installed: pip install 'genvis_hf[eval]'"),
        (["make-synthetic", "out", "--videos", "1"], "datasets",
         "genvis-hf make-synthetic needs datasets, which is not installed: pip install 'genvis_hf[train]'"),
    ],
)  # fmt: skip
def test_a_command_whose_extra_is_missing_names_the_pip_install(monkeypatch, capsys, tmp_path, argv, missing, expected):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {expected}"
    assert not any(tmp_path.iterdir())  # refused before any work
