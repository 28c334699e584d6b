"""JIT build of the compiled operators: every `ops/<op>/csrc/*.cpp` into one CPU library, every `*.cu` into one
CUDA library, compiled on first use with `torch.utils.cpp_extension.load` and cached in torch's extensions folder
(`TORCH_EXTENSIONS_DIR` when set, else `~/.cache/torch_extensions`). Nothing is compiled at import or install.

The libraries are plain shared objects, not Python modules: loading one runs its `TORCH_LIBRARY_FRAGMENT` /
`TORCH_LIBRARY_IMPL` registrations, after which the operators exist as `torch.ops.genvis.<name>`, and the Python
side of each operator (fake implementation, autograd formula) is registered once. The CUDA library holds CUDA
implementations only; the CPU library, which defines the schemas, is always loaded before it.

A missing toolchain (C++ compiler, ninja, nvcc) or a failed build makes the operators unavailable with a one-line
reason, remembered for the rest of the process; `genvis_hf.settings` (`compiled_ops=False`,
`GENVIS_HF_COMPILED_OPS=0`) switches them off without trying.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import threading
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from .. import settings
from ..utils.messages import one_line

logger = hf_logging.get_logger(__name__)

OPS_DIR = Path(__file__).resolve().parent
COMMON_INCLUDE_DIR = OPS_DIR / "common"
_SUPPORTED_DEVICE_TYPES = ("cpu", "cuda")

_SWITCHED_OFF = "compiled operators are switched off (genvis_hf.settings compiled_ops=False, GENVIS_HF_COMPILED_OPS=0)"
_lock = threading.RLock()
_loaded: set[str] = set()
_failures: dict[str, str] = {}  # device type -> one-line reason its library cannot be had


class OpsBuildError(RuntimeError):
    """The compiled operators could not be built or loaded; the message is one line."""


def _cpu_isa() -> tuple[str, list[str]]:
    """(name suffix, compiler flags) for the CPU instruction set the kernels are built for: AVX2 + FMA where
    torch itself dispatches to AVX2/AVX-512 kernels (vector code where baseline x86-64 code is scalar, and FMA
    makes the sampling coordinates round like torch's own vectorised grid_sample). The suffix keeps builds for
    different instruction sets apart in a cache folder shared between machines."""
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")()
    if capability in ("AVX2", "AVX512"):
        return "_avx2", ["-mavx2", "-mfma"]
    return "", []


def library_name(device_type: str) -> str:
    """Name of the library (and of its build folder) for `device_type` (`"cpu"` or `"cuda"`)."""
    return f"genvis_ops_{device_type}{_cpu_isa()[0]}"


def sources(device_type: str) -> list[Path]:
    """The C++ (cpu) or CUDA (cuda) sources of every operator, one `csrc/` folder per operator."""
    pattern = "*.cu" if device_type == "cuda" else "*.cpp"
    return sorted(OPS_DIR.glob(f"*/csrc/{pattern}"))


def _include_dirs() -> list[str]:
    return [str(COMMON_INCLUDE_DIR), *sorted({str(path.parent) for path in OPS_DIR.glob("*/csrc/*")})]


def _ensure_ninja_on_path() -> bool:
    """True if a `ninja` executable can be run; adds the `ninja` wheel's binary folder to PATH if that is where
    the only one is (a venv that is not activated does not have its `bin/` on PATH)."""
    if shutil.which("ninja"):
        return True
    if importlib.util.find_spec("ninja") is None:
        return False
    import ninja  # the PyPI wheel: a `ninja` binary inside the package

    bin_dir = getattr(ninja, "BIN_DIR", None)
    if bin_dir and (Path(bin_dir) / "ninja").exists():
        os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), str(bin_dir)])
        return True
    return False


def _cpp_extension():
    """`torch.utils.cpp_extension`, imported without its import-time warning on machines with a CUDA toolkit but
    no GPU ("No CUDA runtime is found, using CUDA_HOME=..."): kept at debug level, as it says nothing about CPU
    builds."""
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        import torch.utils.cpp_extension as cpp_extension
    finally:
        cpp_logger.setLevel(level)
    return cpp_extension


def toolchain_problem(device_type: str) -> str | None:
    """None when everything needed to build the `device_type` library is present, else why not."""
    if not settings.compiled_ops_enabled():
        return _SWITCHED_OFF
    if device_type not in _SUPPORTED_DEVICE_TYPES:
        return f"no kernels for device type {device_type!r} (only cpu and cuda)"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} not found; install g++ or set CXX)"
    if not _ensure_ninja_on_path():
        return "ninja is not installed (pip install ninja)"
    if device_type == "cuda":
        if torch.version.cuda is None:
            return "this torch build has no CUDA support"
        cuda_home = _cpp_extension().CUDA_HOME
        if cuda_home is None or not (Path(cuda_home) / "bin" / "nvcc").exists():
            return "nvcc not found (set CUDA_HOME to a CUDA toolkit matching torch's CUDA version)"
    return None


def _build_directory(device_type: str) -> Path | None:
    try:
        get_directory = _cpp_extension()._get_build_directory  # private, stable since torch 1.x
    except AttributeError:
        return None
    return Path(get_directory(library_name(device_type), verbose=False))


def _needs_compile(build_dir: Path | None, device_type: str) -> bool:
    """Whether `load` is about to compile: no cached build, or sources newer than it (ninja decides alike)."""
    if build_dir is None:
        return True
    library = build_dir / f"{library_name(device_type)}.so"
    if not library.exists():
        return True
    inputs = [*sources(device_type), *OPS_DIR.glob("*/csrc/*.h"), *COMMON_INCLUDE_DIR.glob("*.h")]
    built = library.stat().st_mtime
    return any(path.stat().st_mtime > built for path in inputs)


def _compile_and_load(device_type: str) -> None:
    cpp_extension = _cpp_extension()
    build_dir = _build_directory(device_type)
    if _needs_compile(build_dir, device_type):
        logger.warning(
            "genvis_hf: compiling the %s operators (first use, ~%s; cached in %s)",
            device_type, "30 s" if device_type == "cpu" else "1-2 min", build_dir or "torch's extensions folder",
        )  # fmt: skip
    cflags = ["-O3", "-fopenmp", "-DNDEBUG", *_cpu_isa()[1]]
    kwargs = {}
    if device_type == "cuda":
        kwargs["extra_cuda_cflags"] = ["-O3", "-DNDEBUG", "-DGENVIS_WITH_CUDA"]
        cflags.append("-DGENVIS_WITH_CUDA")
    cpp_extension.load(
        name=library_name(device_type), sources=[str(path) for path in sources(device_type)],
        extra_include_paths=_include_dirs(), extra_cflags=cflags, extra_ldflags=["-fopenmp"],
        is_python_module=False, verbose=False, **kwargs,
    )  # fmt: skip


def load_library(device_type: str = "cpu") -> None:
    """Make the operators available for `device_type` (building the library on first use; thread-safe, and
    torch's file lock serialises concurrent builds across processes). Raises `OpsBuildError` (one line) when it
    cannot; the failure is remembered, so later calls raise at once."""
    if device_type in _loaded:
        return
    with _lock:
        if device_type in _loaded:
            return
        if device_type == "cuda":
            load_library("cpu")  # defines the schemas the CUDA library implements
        if device_type in _failures:
            raise OpsBuildError(_failures[device_type])
        problem = toolchain_problem(device_type)
        if problem is not None:
            raise OpsBuildError(problem)  # not remembered: a setting may change it
        try:
            _compile_and_load(device_type)
        except Exception as error:  # compiler errors, a broken toolchain, an unloadable library
            logger.warning("genvis_hf: building the %s operators failed:\n%s", device_type, error)
            _failures[device_type] = f"compiling the C++ operators failed ({one_line(error)})"
            raise OpsBuildError(_failures[device_type]) from error
        if device_type == "cpu":
            from . import register_python_parts

            register_python_parts()
        _loaded.add(device_type)


def unavailable_reason(device_type: str = "cpu") -> str | None:
    """None when the compiled operators may and can run on `device_type` (loading them), else a one-line reason
    (the settings are checked on every call: a library loaded earlier stays loaded when they are switched off)."""
    if not settings.compiled_ops_enabled():
        return _SWITCHED_OFF
    try:
        load_library(device_type)
    except OpsBuildError as error:
        return str(error)
    return None


def available(device_type: str = "cpu") -> bool:
    return unavailable_reason(device_type) is None


def forget_failures() -> None:
    """Forget remembered build failures (tests; after installing a compiler). Loaded libraries stay loaded: a
    shared library cannot be unloaded from a process."""
    with _lock:
        _failures.clear()
