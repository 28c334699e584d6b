"""When a fast-path operator may run: the shared checks of the fast modules.

The checks that do not depend on the inputs are constants to torch.compile (`assume_constant_result`): dynamo
evaluates them once while tracing instead of tracing into them (they read settings and probe the torch build), so
a compiled model is specialised to the settings in force when it was compiled."""

from __future__ import annotations

import torch

from .. import ops, settings
from ..ops import fused_conv


def cpu_inference(x: torch.Tensor, *dtypes: torch.dtype) -> bool:
    """No autograd, a CPU tensor, and (when given) one of `dtypes`."""
    return not torch.is_grad_enabled() and x.device.type == "cpu" and (not dtypes or x.dtype in dtypes)


@torch.compiler.assume_constant_result
def compiled_ops_ready() -> bool:
    """The C++ operators may run and are built (building them on first use: ~30 s once per machine)."""
    return settings.compiled_ops_enabled() and ops.available("cpu")


@torch.compiler.assume_constant_result
def fused_conv_ready() -> bool:
    """oneDNN convolutions with post-ops may run (switch on, and this torch build has them)."""
    return settings.fused_conv_enabled() and fused_conv.available()


@torch.compiler.assume_constant_result
def onednn_bfloat16_ready() -> bool:
    """oneDNN's convolutions run in bfloat16 on this CPU (it needs AVX-512 BF16, AMX or AVX-NE-CONVERT, or at
    least AVX-512 BW/VL/DQ; an AVX2-only CPU such as an AMD Zen 3 has none of them)."""
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


@torch.compiler.assume_constant_result
def cpu_has_avx512() -> bool:
    """torch's and oneDNN's CPU kernels run their AVX-512 code here. Without it (e.g. an AMD Zen 2/3, AVX2 only) some
    of the fast path's choices measured on AVX-512 CPUs are slower and are not made (`optimization/layers.py`)."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def onednn_takes(x: torch.Tensor) -> bool:
    """oneDNN's fused convolutions and linears (`fused_conv_ready`) run on `x`'s dtype here: float32 always,
    bfloat16 where the CPU supports it (elsewhere a bfloat16 model keeps the reference modules' ops)."""
    return x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and onednn_bfloat16_ready())


@torch.compiler.assume_constant_result
def linear_uses_onednn() -> bool:
    """`genvis_hf.settings.linear_uses_onednn`, a constant to torch.compile."""
    return settings.linear_uses_onednn()
