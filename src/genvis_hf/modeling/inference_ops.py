"""Compiled CPU ops used at inference in place of torch ops, and the switch that turns them off.

The jit CPU extension (`deformable_attention/csrc/`, built on first use) carries, besides the deformable
attention, kernels that replace torch ops at CPU inference where they compute the same thing faster, up to
float rounding:

- `winograd_conv3x3`: 3x3 stride-1 convolutions by Winograd F(4x4, 3x3) (`winograd.py`);
- `masked_attention`: Mask2Former's masked cross-attention, one GEMM pair per (frame, head) instead of SDPA's
  flash blocks (`layers.GenVISAttention`).

They are used only without autograd, in float32, on CPUs, where the extension can be had. Their results differ
from torch's ops by rounding only (documented next to each kernel), so code that must match torch bit for bit
(the model exported for `trust_remote_code`, which carries no compiled code) turns them off:
`GENVIS_HF_INFERENCE_OPS=0` for the process, `inference_ops_disabled()` within a block.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator

DISABLE_ENV = "GENVIS_HF_INFERENCE_OPS"
_enabled = contextvars.ContextVar("genvis_hf_inference_ops_enabled", default=True)


@contextlib.contextmanager
def inference_ops_disabled() -> Iterator[None]:
    """Within the block, the ops these kernels replace run as torch's own."""
    token = _enabled.set(False)
    try:
        yield
    finally:
        _enabled.reset(token)


def inference_op(name: str) -> Callable | None:
    """The jit CPU extension's function `name`, or None where it must not or cannot run (switched off, no
    compiler, a failed build; always in the exported `trust_remote_code` code, whose dispatch has no kernels)."""
    if not _enabled.get() or os.environ.get(DISABLE_ENV, "1") in ("0", "false", "False"):
        return None
    from .deformable_attention.dispatch import cpu_inference_kernel as extension_function

    return extension_function(name)
