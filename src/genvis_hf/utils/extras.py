"""Optional features and the extra that installs each (`pip install genvis_hf` is the inference core: model,
processor, pipeline, `genvis-hf segment`, `genvis-hf convert`).

    require_extra("train", "genvis-hf train")   # raises MissingExtraError: one line with the pip install
"""

from __future__ import annotations

import importlib.util

# extra -> the import names it brings (pyproject.toml's [project.optional-dependencies])
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("accelerate", "datasets", "scipy"),
    "eval": ("datasets", "evaluate"),
    "demo": ("gradio",),
    "kernels": ("kernels",),
}
# import name -> the extra to name when it is missing (the first extra that brings it)
EXTRA_OF_MODULE: dict[str, str] = {}
for _extra, _modules in EXTRAS.items():
    for _module in _modules:
        EXTRA_OF_MODULE.setdefault(_module, _extra)


class MissingExtraError(ImportError):
    """A feature's optional dependency is not installed; the message (one line) gives the `pip install`."""


def install_hint(extra: str) -> str:
    """`pip install 'genvis_hf[train]'`; `extra` may name alternatives, `"train|eval"`."""
    return " or ".join(f"pip install 'genvis_hf[{name}]'" for name in extra.split("|"))


def missing_extra_message(feature: str, module: str, extra: str | None = None) -> str:
    extra = extra or EXTRA_OF_MODULE.get(module.split(".")[0])
    hint = install_hint(extra) if extra else f"pip install {module.split('.')[0]}"
    return f"{feature} needs {module.split('.')[0]}, which is not installed: {hint}"


def require_extra(extra: str, feature: str) -> None:
    """Raise `MissingExtraError` naming the `pip install` when a package of `extra` is not importable."""
    for module in EXTRAS[extra.split("|")[0]]:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(missing_extra_message(feature, module, extra))


__all__ = ["EXTRAS", "EXTRA_OF_MODULE", "MissingExtraError", "install_hint", "missing_extra_message", "require_extra"]
