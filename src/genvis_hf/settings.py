"""genvis_hf's runtime switches: which parts of the CPU inference fast path may run. One object, read once.

In the spirit of timm's `layers/config.py`: the switches live here and nowhere else; the model code
(`genvis_hf/modeling/`) never reads them, the fast-path layer (`genvis_hf/optimization/`, `genvis_hf/ops/`)
reads them through the getters below. Environment variables are only their documented defaults, read the first
time a setting is asked for; `settings_override(...)` changes them within a block (thread- and task-local),
`set_settings(...)` for the rest of the process.

| setting            | default | environment variable              | what it decides                                   |
|--------------------|---------|-----------------------------------|---------------------------------------------------|
| `optimize_on_eval` | True    | `GENVIS_HF_OPTIMIZE=0`            | `model.eval()` applies `optimize_for_inference`   |
| `compiled_ops`     | True    | `GENVIS_HF_COMPILED_OPS=0`        | the JIT-built C++/CUDA operators (`ops/`) may be built and used (the `jit` deformable attention backend included) |
| `fused_conv`       | True    | `GENVIS_HF_FUSED_CONV=0`          | oneDNN convolutions with fused post-ops (ResNet conv + folded BN + add + ReLU, linear + bias + residual + ReLU) |
| `linear_route`     | "auto"  | `GENVIS_HF_LINEAR=auto|onednn|blas` | how the large token-by-channel products run at CPU inference (see `linear_uses_onednn`) |
| `frames_per_call`  | 4       | `GENVIS_HF_FRAMES_PER_CALL=N`     | per-frame stages run on whole clips making at least N frames at a time |
| `tune_allocator`   | True    | `GENVIS_HF_TUNE_ALLOCATOR=0`      | the fast path, applied to a model on a CPU, tunes glibc's allocator for the process (`genvis_hf.utils.cpu.tune_memory_allocator`) |

`optimize_on_eval=False` (or `genvis_hf.optimization.restore_reference(model)`) gives the reference model:
pure PyTorch, exactly the modules of `genvis_hf/modeling/`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import threading
from collections.abc import Iterator

from .utils.cpu import cpu_vendor

LINEAR_ROUTES = ("auto", "onednn", "blas")

_ENVIRONMENT = {
    "optimize_on_eval": "GENVIS_HF_OPTIMIZE",
    "compiled_ops": "GENVIS_HF_COMPILED_OPS",
    "fused_conv": "GENVIS_HF_FUSED_CONV",
    "linear_route": "GENVIS_HF_LINEAR",
    "frames_per_call": "GENVIS_HF_FRAMES_PER_CALL",
    "tune_allocator": "GENVIS_HF_TUNE_ALLOCATOR",
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The switches of the fast path (see the module docstring for each one and its environment variable)."""

    optimize_on_eval: bool = True
    compiled_ops: bool = True
    fused_conv: bool = True
    linear_route: str = "auto"
    frames_per_call: int = 4
    tune_allocator: bool = True

    def __post_init__(self) -> None:
        if self.linear_route not in LINEAR_ROUTES:
            raise ValueError(f"linear_route must be one of {LINEAR_ROUTES}, got {self.linear_route!r}")
        if (
            isinstance(self.frames_per_call, bool)
            or not isinstance(self.frames_per_call, int)
            or self.frames_per_call < 1
        ):
            raise ValueError(f"frames_per_call must be a positive integer, got {self.frames_per_call!r}")
        for name in ("optimize_on_eval", "compiled_ops", "fused_conv", "tune_allocator"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")


def _parse_flag(variable: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{variable}={text!r}: expected 1 or 0")


def settings_from_environment(environ: dict[str, str] | None = None) -> Settings:
    """The defaults, with each environment variable of the table applied (one line naming a bad value)."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, variable in _ENVIRONMENT.items():
        text = environ.get(variable)
        if text is None or not text.strip():
            continue
        if name == "linear_route":
            values[name] = text.strip().lower()
        elif name == "frames_per_call":
            try:
                values[name] = int(text)
            except ValueError:
                raise ValueError(f"{variable}={text!r}: expected a positive integer") from None
        else:
            values[name] = _parse_flag(variable, text)
    try:
        return Settings(**values)
    except ValueError as error:
        raise ValueError(f"genvis_hf settings from the environment: {error}") from None


_process_settings: Settings | None = None
_process_lock = threading.Lock()
_override: contextvars.ContextVar[Settings | None] = contextvars.ContextVar("genvis_hf_settings", default=None)


def get_settings() -> Settings:
    """The settings in force here: the innermost `settings_override`, else the process-wide ones."""
    global _process_settings
    override = _override.get()
    if override is not None:
        return override
    if _process_settings is None:
        with _process_lock:
            if _process_settings is None:
                _process_settings = settings_from_environment()
    return _process_settings


def set_settings(**changes) -> Settings:
    """Change settings for the whole process (outside any `settings_override` block); returns the new ones."""
    global _process_settings
    with _process_lock:
        base = _process_settings if _process_settings is not None else settings_from_environment()
        _process_settings = dataclasses.replace(base, **changes)
        return _process_settings


@contextlib.contextmanager
def settings_override(**changes) -> Iterator[Settings]:
    """Within the block (this thread / task only), the given settings replace the current ones."""
    token = _override.set(dataclasses.replace(get_settings(), **changes))
    try:
        yield _override.get()
    finally:
        _override.reset(token)


# ------------------------------------------------------------------ getters
def optimize_on_eval() -> bool:
    return get_settings().optimize_on_eval


def compiled_ops_enabled() -> bool:
    return get_settings().compiled_ops


def fused_conv_enabled() -> bool:
    return get_settings().fused_conv


def frames_per_call() -> int:
    return get_settings().frames_per_call


def tune_allocator() -> bool:
    return get_settings().tune_allocator


def linear_uses_onednn() -> bool:
    """Whether large token-by-channel products run as oneDNN 1x1 convolutions (`"onednn"`) or through BLAS
    (`"blas"`, torch's `F.linear`). `"auto"` decides by CPU vendor, from measurements (docs/performance.md,
    "Linear routes"): on AMD EPYCs (Zen 4, Zen 5) the MKL GEMM behind `F.linear` runs far below the fp32 peak that
    oneDNN's convolution reaches; on Intel Xeons MKL is close to the peak, and the convolution route only pays
    where it fuses post-ops. Post-ops (bias, residual, ReLU) are fused on both routes at inference."""
    route = get_settings().linear_route
    if route == "auto":
        return cpu_vendor() != "GenuineIntel"
    return route == "onednn"
