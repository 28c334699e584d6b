"""The `jit` backend: our own C++ (CPU) and CUDA kernels in `csrc/`, compiled on first use with
`torch.utils.cpp_extension.load` and cached in torch's extensions directory (`TORCH_EXTENSIONS_DIR` when set,
else `~/.cache/torch_extensions`). Nothing is compiled at import or install time.

Two extensions, built only for the device type that needs them:

- `genvis_ms_deform_attn_cpu[_avx2]`: `ms_deform_attn.cpp` + `ms_deform_attn_cpu.cpp` (-O3, OpenMP through
  `at::parallel_for`, so it runs on `torch.get_num_threads()` threads; AVX2+FMA where torch itself uses
  AVX2 or AVX-512, see `_cpu_isa`), plus `winograd_cpu.cpp` and `masked_attention_cpu.cpp`: ops that replace
  torch's at CPU inference (`modeling/inference_ops.py`, reached through `dispatch.cpu_inference_kernel`).
- `genvis_ms_deform_attn_cuda[_avx2]`: the same plus `ms_deform_attn_cuda.cu` (nvcc), forward and backward.

A missing toolchain (C++ compiler, ninja, nvcc) or a failed build makes the backend unavailable with a
one-line reason, remembered for the rest of the process; `GENVIS_HF_DISABLE_JIT=1` switches it off.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import threading
from pathlib import Path
from types import ModuleType

import torch
from torch.autograd.function import once_differentiable

logger = logging.getLogger(__name__)

CSRC_DIR = Path(__file__).resolve().parent / "csrc"
DISABLE_ENV = "GENVIS_HF_DISABLE_JIT"
_SUPPORTED_DEVICE_TYPES = ("cpu", "cuda")

_lock = threading.Lock()
_extensions: dict[str, ModuleType] = {}
_failures: dict[str, str] = {}  # device type -> one-line reason the extension cannot be had


class JitBuildError(RuntimeError):
    """The jit extension could not be built or loaded; the message is one line."""


def _cpu_isa() -> tuple[str, list[str]]:
    """(name suffix, compiler flags) for the CPU instruction set the kernels are built for.

    x86 CPUs on which torch itself dispatches to AVX2/AVX-512 kernels get `-mavx2 -mfma` (forward about 2x
    faster than baseline x86-64 code on the Zen 5 development machine, and FMA makes the sampling coordinates
    round like torch's own vectorised grid_sample). The suffix keeps builds for different instruction sets apart, so a cache folder shared
    between machines never hands an AVX2 build to a CPU without AVX2."""
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")()
    if capability in ("AVX2", "AVX512"):
        return "_avx2", ["-mavx2", "-mfma"]
    return "", []


def extension_name(device_type: str) -> str:
    """Name of the extension (and of its build folder) for `device_type` (`"cpu"` or `"cuda"`)."""
    return f"genvis_ms_deform_attn_{device_type}{_cpu_isa()[0]}"


def _sources(device_type: str) -> list[str]:
    names = ["ms_deform_attn.cpp", "ms_deform_attn_cpu.cpp", "winograd_cpu.cpp", "masked_attention_cpu.cpp"]
    if device_type == "cuda":
        names.append("ms_deform_attn_cuda.cu")
    return [str(CSRC_DIR / name) for name in names]


def _ensure_ninja_on_path() -> bool:
    """True if a `ninja` executable can be run; adds the `ninja` wheel's binary folder to PATH if that is
    where the only one is (a venv that is not activated does not have its `bin/` on PATH)."""
    if shutil.which("ninja"):
        return True
    spec = importlib.util.find_spec("ninja")
    if spec is None:
        return False
    import ninja  # the PyPI wheel: a `ninja` binary inside the package

    bin_dir = getattr(ninja, "BIN_DIR", None)
    if bin_dir and (Path(bin_dir) / "ninja").exists():
        os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), str(bin_dir)])
        return True
    return False


def toolchain_problem(device_type: str) -> str | None:
    """None when everything needed to build the `device_type` extension is present, else why not."""
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return f"disabled by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
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
        from torch.utils.cpp_extension import CUDA_HOME

        if CUDA_HOME is None or not (Path(CUDA_HOME) / "bin" / "nvcc").exists():
            return "nvcc not found (set CUDA_HOME to a CUDA toolkit matching torch's CUDA version)"
    return None


def _build_directory(device_type: str) -> Path | None:
    """Where torch builds and caches the extension (None if this torch does not say)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory  # private, stable since torch 1.x
    except ImportError:
        return None
    return Path(_get_build_directory(extension_name(device_type), verbose=False))


def _needs_compile(build_dir: Path | None, name: str, device_type: str) -> bool:
    """Whether `load` is about to compile: no cached build, or sources newer than it (ninja decides the
    same way)."""
    if build_dir is None:
        return True
    library = build_dir / f"{name}.so"
    if not library.exists():
        return True
    inputs = [Path(source) for source in _sources(device_type)] + list(CSRC_DIR.glob("*.h"))
    built = library.stat().st_mtime
    return any(path.stat().st_mtime > built for path in inputs)


def _build(device_type: str) -> ModuleType:
    """Compile (or load the cached build of) the extension for `device_type`; raises on failure."""
    from torch.utils.cpp_extension import load

    name = extension_name(device_type)
    build_dir = _build_directory(device_type)
    if _needs_compile(build_dir, name, device_type):
        logger.warning(
            "genvis_hf: compiling the %s deformable attention kernels (first use, ~%s; cached in %s)",
            device_type, "30 s" if device_type == "cpu" else "1-2 min", build_dir or "torch's extensions folder",
        )  # fmt: skip
    cflags = ["-O3", "-fopenmp", "-DNDEBUG", *_cpu_isa()[1]]
    kwargs = {}
    if device_type == "cuda":
        cflags.append("-DGENVIS_WITH_CUDA")
        kwargs["extra_cuda_cflags"] = ["-O3", "-DNDEBUG", "-DGENVIS_WITH_CUDA"]
    return load(
        name=name, sources=_sources(device_type), extra_cflags=cflags, extra_ldflags=["-fopenmp"], verbose=False,
        **kwargs,
    )  # fmt: skip


def _one_line(error: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`, cut to `limit` characters (a compiler's first line can be long)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0] if lines else 'no message'}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_extension(device_type: str) -> ModuleType:
    """The compiled extension for `device_type`, built on first use (thread-safe; torch's file lock
    serialises concurrent builds across processes). Raises `JitBuildError` (one line) when it cannot be had;
    the failure is remembered, so later calls raise at once."""
    module = _extensions.get(device_type)
    if module is not None:
        return module
    with _lock:
        if device_type in _extensions:
            return _extensions[device_type]
        if device_type in _failures:
            raise JitBuildError(_failures[device_type])
        problem = toolchain_problem(device_type)
        if problem is not None:
            _failures[device_type] = problem
            raise JitBuildError(problem)
        try:
            module = _build(device_type)
        except Exception as error:  # compiler errors, a broken toolchain, an unloadable .so
            logger.warning("genvis_hf: building the %s deformable attention kernels failed:\n%s", device_type, error)
            _failures[device_type] = f"compiling the C++ extension failed ({_one_line(error)})"
            raise JitBuildError(_failures[device_type]) from error
        _extensions[device_type] = module
        return module


def reset() -> None:
    """Forget loaded extensions and remembered failures (tests; after installing a compiler)."""
    with _lock:
        _extensions.clear()
        _failures.clear()


class MultiScaleDeformableAttentionFunction(torch.autograd.Function):
    """Autograd wrapper of the compiled kernels. Differentiable once (in value, sampling locations and
    attention weights); a double backward raises instead of returning wrong gradients."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        extension = load_extension(value.device.type)
        output = extension.forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        ctx.extension = extension
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = ctx.extension.backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output.contiguous()
        )
        return grad_value, None, None, grad_locations, grad_weights


def multi_scale_deformable_attention_jit(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    spatial_shapes_list: list[tuple[int, int]],
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention with the compiled kernels.

    Args:
        value: `[N, S, heads, d]`. spatial_shapes: int64 `[levels, 2]`. spatial_shapes_list: the same as ints
        (used to check S). level_start_index: int64 `[levels]`. sampling_locations:
        `[N, Lq, heads, levels, points, 2]`. attention_weights: `[N, Lq, heads, levels, points]`.

    Returns:
        `[N, Lq, heads * d]`, in the dtype of `value`.
    """
    total = sum(int(h) * int(w) for h, w in spatial_shapes_list)
    if value.shape[1] != total:
        raise ValueError(f"value has {value.shape[1]} positions but the spatial shapes add up to {total}")
    device = value.device
    return MultiScaleDeformableAttentionFunction.apply(
        value.contiguous(),
        spatial_shapes.to(device=device, dtype=torch.long).contiguous(),
        level_start_index.to(device=device, dtype=torch.long).contiguous(),
        sampling_locations.to(value.dtype).contiguous(),
        attention_weights.to(value.dtype).contiguous(),
    )
