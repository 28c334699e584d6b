"""Registered operators of genvis_hf's fast path: namespace `genvis` of `torch.library`, one folder per operator,
each with its pure-PyTorch reference beside it and a fake (meta) implementation, so torch.compile and torch.export
trace through them.

| operator (torch.ops.genvis.*)          | folder              | implementation                         | autograd |
|----------------------------------------|---------------------|----------------------------------------|----------|
| `ms_deform_attn`, `_backward`          | `ms_deform_attn/`   | C++ (CPU), CUDA: JIT-built on first use | yes      |
| `ms_deform_attn_from_projections`      | `ms_deform_attn/`   | C++ (CPU)                              | no       |
| `winograd_conv3x3`                     | `winograd/`         | C++ (CPU)                              | no       |
| `masked_attention`                     | `masked_attention/` | C++ (CPU)                              | no       |
| `window_attention`                     | `window_attention/` | C++ (CPU)                              | no       |
| `conv2d_pointwise`                     | `fused_conv/`       | Python over oneDNN (always available)  | no       |
| `linear_pointwise`                     | `linear/`           | Python over oneDNN (always available)  | no       |

The C++/CUDA operators exist once `build.load_library(device_type)` has built and loaded their library
(`available()` says whether it can); `genvis_hf.settings` switches them off. The model code (`genvis_hf/modeling/`)
never calls them: `genvis_hf.optimization` swaps in the modules that do, and the `jit` deformable attention backend
(`ms_deform_attn/backends.py`) runs `ms_deform_attn` for training and inference alike.
"""

from __future__ import annotations

from . import fused_conv, linear  # noqa: F401  (defines the Python operators)
from .build import OpsBuildError, available, load_library, unavailable_reason


def register_python_parts() -> None:
    """Fake implementations and autograd formulas of the C++ operators (called once their library is loaded)."""
    from . import masked_attention, ms_deform_attn, window_attention, winograd

    for op in (ms_deform_attn, winograd, masked_attention, window_attention):
        op.register_python_parts()


__all__ = ["OpsBuildError", "available", "load_library", "register_python_parts", "unavailable_reason"]
