"""The layering of docs/architecture.md, checked on the source: the reference model (`genvis_hf/modeling/`) reads no
environment and never imports the fast path; backbones come from a registry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import tiny_config_kwargs

import genvis_hf
from genvis_hf import GenVISConfig, GenVISModel
from genvis_hf.modeling.backbones import BACKBONES

MODELING = Path(genvis_hf.__file__).parent / "modeling"
FAST_PATH = ("ops", "optimization", "settings")


def _modules():
    return sorted(MODELING.glob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_the_reference_model_reads_no_environment_and_does_not_import_the_fast_path(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert not (node.attr in ("environ", "getenv") and isinstance(node.value, ast.Name)
                        and node.value.id == "os"), f"{path.name}:{node.lineno} reads the environment"  # fmt: skip
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            top = (
                module.split(".")[0]
                if node.level == 2
                else module.split(".")[1]
                if module.startswith("genvis_hf.")
                else ""
            )
            assert top not in FAST_PATH, f"{path.name}:{node.lineno} imports {module} (the fast path)"
            if node.level == 2 and not module:  # `from .. import x`
                assert not {a.name for a in node.names} & set(FAST_PATH), f"{path.name}:{node.lineno}"


def test_an_unknown_backbone_type_names_the_known_ones():
    config = GenVISConfig(**tiny_config_kwargs())
    config.backbone_type = "convnext"
    with pytest.raises(ValueError, match=r"unknown backbone_type 'convnext'; known backbones: \['resnet', 'swin'\]"):
        GenVISModel(config)
    assert sorted(BACKBONES) == ["resnet", "swin"]
