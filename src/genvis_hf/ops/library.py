"""The `genvis` operator namespace as seen from Python: operators implemented in Python (compositions of torch's
own oneDNN operators) are defined here, beside the C++ ones (`TORCH_LIBRARY_FRAGMENT(genvis, ...)` in `csrc/`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

NAMESPACE = "genvis"
_library = torch.library.Library(NAMESPACE, "FRAGMENT")  # kept alive: the registrations live as long as it does


def define_op(schema: str, *, cpu: Callable, fake: Callable) -> None:
    """Define `genvis::<schema>` with a CPU implementation and a fake (meta) one for torch.compile / torch.export.
    No autograd formula: these operators serve inference only."""
    name = schema.split("(", 1)[0]
    _library.define(schema)
    _library.impl(name, cpu, "CPU")
    torch.library.register_fake(f"{NAMESPACE}::{name}", fake, lib=_library)
