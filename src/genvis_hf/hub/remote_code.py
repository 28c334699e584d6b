"""Export the GenVIS code next to a model so that `trust_remote_code=True` loads it without `genvis_hf`.

transformers loads custom code from the model directory (or Hub repo): `config.json`'s `auto_map` names
`module.Class` for each Auto class, and the module may import sibling files of the same directory with
single-dot relative imports (`from .layers import MLP`); nothing else. Our code lives in a src-layout package
whose modules import across subpackages (`from ..configuration.configuration_genvis import GenVISConfig`), so
it is exported FLAT:

- starting from the three modules the Auto classes need (configuration, modeling, video processing), every
  module reachable through relative imports (at any depth, including imports inside functions: transformers
  copies those too) is written to one file in the model directory, named after its place in the package
  (`genvis_hf.modeling.layers` -> `layers.py`, `genvis_hf.utils.errors` -> `errors.py`, a package's
  `__init__` -> the package name; modules whose short names coincide keep their subpackage:
  `processing_rle.py`, `evaluation_rle.py`);
- each of its relative imports is rewritten to the flat sibling (`from ..configuration.configuration_genvis
  import X` -> `from .configuration_genvis import X`); the source is otherwise copied byte for byte;
- the model code is exported as it is: it is the pure-PyTorch reference (`genvis_hf/modeling/`), which never
  imports the fast path (`genvis_hf/optimization/`, `genvis_hf/ops/`: compiled operators, Hub kernels); those
  register themselves with the model only when `genvis_hf` is imported, so the exported model runs the reference
  modules and the `torch` deformable attention backend whatever its config names;
- every `from X import name` between exported modules is checked to find `name` in X, and
  `config.json` / `video_preprocessor_config.json` get their `auto_map`.

`export_remote_code(model_dir)` does all of this and, by default, imports the exported files back (checking
them with transformers' own relative-import and requirement scanners) and checks that the exported classes
produce exactly the package's outputs.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..utils.files import write_text_atomic
from ..utils.messages import one_line

PACKAGE = "genvis_hf"

# auto_map key -> (module, class). AutoModelForVideoInstanceSegmentation is genvis_hf's own Auto class (the
# pipeline's); transformers' Auto classes read the other three.
AUTO_MAP = {
    "AutoConfig": ("genvis_hf.configuration.configuration_genvis", "GenVISConfig"),
    "AutoModel": ("genvis_hf.modeling.modeling_genvis", "GenVISModel"),
    "AutoModelForVideoInstanceSegmentation": (
        "genvis_hf.modeling.modeling_genvis",
        "GenVISForVideoInstanceSegmentation",
    ),
    "AutoVideoProcessor": ("genvis_hf.processing.video_processing_genvis", "GenVISVideoProcessor"),
}
HEADER = "# Exported from {module} (genvis_hf {version}) by genvis_hf.hub.export_remote_code: do not edit.\n"
_HEADER_PREFIX = "# Exported from "
# import name -> pip name, for the requirement list
_PIP_NAMES = {"PIL": "pillow", "yaml": "pyyaml", "cv2": "opencv-python", "sklearn": "scikit-learn"}


class RemoteCodeExportError(RuntimeError):
    """The package's modules cannot be exported flat (the message says which import and why)."""


@dataclass
class _Module:
    name: str  # dotted module name in the package
    source: str
    is_package: bool
    origin: str
    tree: ast.Module = field(init=False)
    flat: str = field(init=False, default="")  # file stem in the export (set by collect_modules)

    def __post_init__(self) -> None:
        self.tree = ast.parse(self.source, filename=self.origin)

    @property
    def package(self) -> str:
        """The package its relative imports are resolved against."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


@dataclass
class RemoteCodeExport:
    """What `export_remote_code` wrote: flat module files, the auto_map, third-party imports needed."""

    directory: Path
    files: list[str]
    auto_map: dict[str, str]
    requirements: list[str]
    modules: dict[str, str]  # package module -> flat file name


def flat_name(module: str, *, qualified: bool = False) -> str:
    """File stem of `module` in the export: its path below the top-level subpackage joined with `_`
    (`genvis_hf.modeling.layers` -> `layers`), or with `qualified`, below the package
    (`genvis_hf.processing.rle` -> `processing_rle`), used when two modules would get the same short name."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        raise RemoteCodeExportError(f"cannot export {module!r}: only modules below {PACKAGE} are exported")
    parts = parts[1:]
    if len(parts) >= 2 and not qualified:
        parts = parts[1:]  # configuration / modeling / processing / ...: one flat namespace
    return "_".join(parts)


def flat_names(modules) -> dict[str, str]:
    """Module -> file stem for a set of modules: the short name, or the qualified one for each module whose
    short name another module of the set shares (`processing.rle` and `evaluation.rle` -> `processing_rle`,
    `evaluation_rle`). Raises `RemoteCodeExportError` if two modules still collide."""
    short = {name: flat_name(name) for name in modules}
    counts: dict[str, int] = {}
    for stem in short.values():
        counts[stem] = counts.get(stem, 0) + 1
    names = {name: stem if counts[stem] == 1 else flat_name(name, qualified=True) for name, stem in short.items()}
    seen: dict[str, str] = {}
    for name, stem in names.items():
        if stem in seen:
            raise RemoteCodeExportError(f"{name} and {seen[stem]} would both be exported as {stem}.py")
        seen[stem] = name
    return names


def _load_module(name: str) -> _Module:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise RemoteCodeExportError(f"cannot export {name!r}: no Python source found")
    path = Path(spec.origin)
    return _Module(name, path.read_text(encoding="utf-8"), path.name == "__init__.py", str(path))


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _resolve(module: _Module, node: ast.ImportFrom) -> str | None:
    """Absolute name of the module a `from ... import` refers to, if it is one of ours; None otherwise."""
    if node.level == 0:
        if node.module and (node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
            return node.module
        return None
    base = module.package.split(".")
    if node.level - 1 >= len(base):
        raise RemoteCodeExportError(f"{module.origin}:{node.lineno}: relative import beyond the package")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _internal_imports(module: _Module):
    """(node, target module, [(imported name, bound name, is_submodule)]) for each import of our package."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    raise RemoteCodeExportError(
                        f"{module.origin}:{node.lineno}: `import {alias.name}` cannot be exported; "
                        "use a relative `from . import` instead"
                    )
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target is None:
                continue
            names = []
            for alias in node.names:
                if alias.name == "*":
                    raise RemoteCodeExportError(f"{module.origin}:{node.lineno}: star imports cannot be exported")
                submodule = f"{target}.{alias.name}"
                names.append((alias.name, alias.asname, _is_module(submodule) and target != submodule))
            yield node, target, names


def _top_level_names(module: _Module) -> set[str]:
    names: set[str] = set()
    for node in module.tree.body:
        nodes = [node]
        if isinstance(node, (ast.If, ast.Try)):  # e.g. `try: import x except ImportError: x = None`
            nodes = list(ast.walk(node))
        for item in nodes:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(item.name)
            elif isinstance(item, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                for target in targets:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(item, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in item.names)
    return names


def collect_modules(roots: list[str] | None = None) -> dict[str, _Module]:
    """Every module reachable from `roots` (default: the auto_map modules) through imports of our package."""
    pending = list(dict.fromkeys(roots or [module for module, _ in AUTO_MAP.values()]))
    modules: dict[str, _Module] = {}
    while pending:
        name = pending.pop(0)
        if name in modules:
            continue
        if name == PACKAGE:
            raise RemoteCodeExportError(f"cannot export an import of the package root {PACKAGE!r}")
        modules[name] = module = _load_module(name)
        for _, target, names in _internal_imports(module):
            for imported, _, is_submodule in names:
                pending.append(f"{target}.{imported}" if is_submodule else target)
    stems = flat_names(modules)
    for name, module in modules.items():
        module.flat = stems[name]
    # every name imported between exported modules must exist in its module
    for module in modules.values():
        for node, target, names in _internal_imports(module):
            for imported, _, is_submodule in names:
                if not is_submodule and imported not in _top_level_names(modules[target]):
                    raise RemoteCodeExportError(
                        f"{module.origin}:{node.lineno}: imports {imported!r} from {target}, which the exported "
                        f"{modules[target].flat}.py does not define"
                    )
    return modules


def rewrite_imports(module: _Module, modules: dict[str, _Module]) -> str:
    """The module's source with every import of our package pointing at the flat sibling files (`modules`:
    the exported set, as `collect_modules` returns it)."""
    lines = module.source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    edits = []
    for node, target, names in _internal_imports(module):
        statements = []
        plain = [(n, a) for n, a, sub in names if not sub]
        if plain:
            imported = ", ".join(n if a is None else f"{n} as {a}" for n, a in plain)
            statements.append(f"from .{modules[target].flat} import {imported}")
        for name, alias, is_submodule in names:
            if is_submodule:
                statements.append(f"from . import {modules[f'{target}.{name}'].flat} as {alias or name}")
        indent = " " * node.col_offset
        start = offsets[node.lineno - 1] + node.col_offset
        end = offsets[node.end_lineno - 1] + node.end_col_offset
        edits.append((start, end, f"\n{indent}".join(statements)))
    source = module.source
    for start, end, text in sorted(edits, reverse=True):
        source = source[:start] + text + source[end:]
    return source


def third_party_imports(modules: dict[str, _Module]) -> list[str]:
    """Top-level packages the exported files import that are not in the standard library (as transformers'
    `check_imports` sees them: imports inside `try` blocks are optional and not listed)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Try):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    for module in modules.values():
        visit(module.tree)
    found -= set(sys.stdlib_module_names) | {"__future__", PACKAGE}
    return sorted(_PIP_NAMES.get(name, name) for name in found)


def _update_json(path: Path, auto_map: dict[str, str]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["auto_map"] = auto_map
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def export_remote_code(model_dir: str | Path, *, validate: bool = True) -> RemoteCodeExport:
    """Write the flat GenVIS code into `model_dir` and its `auto_map` into `config.json` and
    `video_preprocessor_config.json`, so that

        AutoConfig / AutoModel / AutoVideoProcessor.from_pretrained(model_dir, trust_remote_code=True)

    work where `genvis_hf` is not installed (also after uploading the directory to the Hub). Files of a
    previous export that are no longer needed are removed. With `validate`, the exported classes are loaded
    through transformers' dynamic-module loader and must give outputs identical to the package's (torch
    deformable-attention backend); `RemoteCodeExportError` otherwise.
    """
    from .. import __version__

    model_dir = Path(model_dir)
    for required in ("config.json", "video_preprocessor_config.json"):
        if not (model_dir / required).is_file():
            raise RemoteCodeExportError(f"{model_dir} has no {required}: export into a converted model directory")
    modules = collect_modules()
    written = []
    for name, module in modules.items():
        file_name = f"{module.flat}.py"
        write_text_atomic(
            model_dir / file_name, HEADER.format(module=name, version=__version__) + rewrite_imports(module, modules)
        )
        written.append(file_name)
    for stale in model_dir.glob("*.py"):
        if stale.name not in written and stale.read_text(encoding="utf-8").startswith(_HEADER_PREFIX):
            stale.unlink()
    auto_map = {key: f"{modules[module].flat}.{cls}" for key, (module, cls) in AUTO_MAP.items()}
    _update_json(model_dir / "config.json", auto_map)
    _update_json(model_dir / "video_preprocessor_config.json", {"AutoVideoProcessor": auto_map["AutoVideoProcessor"]})
    export = RemoteCodeExport(
        directory=model_dir,
        files=sorted(written),
        auto_map=auto_map,
        requirements=third_party_imports(modules),
        modules={name: f"{module.flat}.py" for name, module in modules.items()},
    )
    if validate:
        validate_remote_code(model_dir)
    return export


@contextlib.contextmanager
def remote_classes(model_dir: str | Path) -> Iterator[dict[str, type]]:
    """Context manager giving the classes `auto_map` names, imported from the directory's own files, never
    from `genvis_hf`.

    Mirrors what `trust_remote_code=True` does without writing to the transformers modules cache: transformers'
    own `get_relative_import_files` must find every file the modules need in the directory, and its
    `check_imports` must pass for each of them (the third-party packages are installed); the files are then
    imported as one package of a private name (no bytecode written into the directory), removed from
    `sys.modules` when the context exits. Raises `RemoteCodeExportError` when a file is missing or a module fails to import.
    """
    import importlib
    import types
    import uuid

    from transformers.dynamic_module_utils import check_imports, get_relative_import_files

    model_dir = Path(model_dir).resolve()
    auto_map = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("auto_map") or {}
    if not auto_map:
        raise RemoteCodeExportError(f"{model_dir}/config.json has no auto_map")
    for reference in sorted(set(auto_map.values())):
        module_file = model_dir / f"{reference.split('.')[0]}.py"
        try:  # transformers' own recursive scan of the relative imports it will copy
            needed_files = [str(module_file), *get_relative_import_files(str(module_file))]
        except FileNotFoundError as error:
            raise RemoteCodeExportError(
                f"{reference} needs {Path(error.filename).name}, which is not in {model_dir}"
            ) from None
        for needed in needed_files:
            if not Path(needed).is_file():
                raise RemoteCodeExportError(f"{reference} needs {Path(needed).name}, which is not in {model_dir}")
            try:
                check_imports(needed)  # what transformers runs before importing a remote module
            except ImportError as error:
                raise RemoteCodeExportError(f"{Path(needed).name}: {one_line(error)}") from error
    package = f"_genvis_remote_code_check_{uuid.uuid4().hex}"
    module = types.ModuleType(package)
    module.__path__ = [str(model_dir)]
    sys.modules[package] = module
    dont_write_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        classes = {}
        try:
            for key, reference in auto_map.items():
                module_name, class_name = reference.split(".")
                classes[key] = getattr(importlib.import_module(f"{package}.{module_name}"), class_name)
        except Exception as error:
            raise RemoteCodeExportError(f"the exported code does not import: {one_line(error)}") from error
        yield classes
    finally:
        sys.dont_write_bytecode = dont_write_bytecode
        for name in [name for name in sys.modules if name == package or name.startswith(package + ".")]:
            del sys.modules[name]


def validate_remote_code(model_dir: str | Path, num_frames: int = 2) -> None:
    """Load the exported classes from `model_dir` and check that model and processor outputs are identical to
    the package's (same directory, torch deformable-attention backend); `RemoteCodeExportError` if not."""
    with remote_classes(model_dir) as classes:
        try:
            remote_model = classes["AutoModelForVideoInstanceSegmentation"].from_pretrained(model_dir).eval()
            remote_processor = classes["AutoVideoProcessor"].from_pretrained(model_dir)
        except Exception as error:  # whatever the exported code raises while loading
            raise RemoteCodeExportError(f"the exported code does not load the model: {one_line(error)}") from error
        _compare_with_package(model_dir, remote_model, remote_processor, num_frames)


def _compare_with_package(model_dir, remote_model, remote_processor, num_frames: int) -> None:
    import numpy as np
    import torch

    from ..modeling.modeling_genvis import GenVISForVideoInstanceSegmentation
    from ..processing.video_processing_genvis import GenVISVideoProcessor

    # the package's reference path: the modules the export carries, the torch backend
    model = GenVISForVideoInstanceSegmentation.from_pretrained(model_dir).eval().restore_reference()
    model.set_deformable_attention_backend("torch")
    processor = GenVISVideoProcessor.from_pretrained(model_dir)
    video = np.random.default_rng(0).integers(0, 256, size=(num_frames, 48, 64, 3), dtype=np.uint8)
    inputs = processor(videos=[video], return_tensors="pt")
    remote_inputs = remote_processor(videos=[video], return_tensors="pt")
    if not torch.equal(inputs["pixel_values"], remote_inputs["pixel_values"]):
        raise RemoteCodeExportError("the exported video processor gives different pixel values")
    # the model on a small input (the processor's full test size would only cost time)
    pixel_values = torch.randn(1, num_frames, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = model(pixel_values), remote_model(pixel_values)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor) and not torch.equal(value, actual[key]):
            raise RemoteCodeExportError(f"the exported model's {key} differs from the package's")
    sizes = [video.shape[1:3]]
    expected_video = processor.post_process_video_instance_segmentation(expected, target_sizes=sizes)[0]
    actual_video = remote_processor.post_process_video_instance_segmentation(actual, target_sizes=sizes)[0]
    for key in ("scores", "labels", "masks"):
        if not torch.equal(expected_video[key], actual_video[key]):
            raise RemoteCodeExportError(f"the exported post-processing gives different {key}")
