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
def linear_uses_onednn() -> bool:
    """`genvis_hf.settings.linear_uses_onednn`, a constant to torch.compile."""
    return settings.linear_uses_onednn()
