"""Tensors derived from a module's parameters for the fast path (a batch norm folded into convolution weights,
Winograd-transformed filters, projections concatenated into one), cached until their sources change."""

from __future__ import annotations

from collections.abc import Callable

import torch


def _version(tensor: torch.Tensor) -> int:
    """The tensor's in-place modification counter (inference tensors, e.g. parameters of a model built under
    `torch.inference_mode()`, have none and cannot be modified outside it: 0)."""
    return 0 if tensor.is_inference() else tensor._version


class DerivedTensorCache:
    """One value derived from parameters or buffers, rebuilt whenever a source tensor is replaced (`.to()`,
    `load_state_dict(assign=True)`) or modified in place (an optimizer step, `load_state_dict`). Not module state:
    never saved, never loaded.

    Under `torch.compile` the cached value is used as it is (a compiled model is specialised to its weights:
    `compile_for_inference` builds every cache first, and weights changed afterwards need a new compilation)."""

    def __init__(self):
        self._key: tuple | None = None
        self._value = None

    def get(self, sources: tuple[torch.Tensor, ...], build: Callable, *extra_key):
        if torch.compiler.is_compiling():  # tracing: never store a traced (fake) value
            return self._value if self._value is not None else build()
        key = (*extra_key, *((t.data_ptr(), _version(t)) for t in sources))
        if key != self._key:
            with torch.no_grad():
                self._value = build()
            self._key = key
        return self._value
