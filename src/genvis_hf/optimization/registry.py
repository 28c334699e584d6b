"""Which fast module stands in for which reference module, and the swap itself.

A fast module is a subclass of the reference module that only overrides `forward` (plus private caches): the swap
changes the class of the live module object (`module.__class__`, as `torch.nn.utils.parametrize` does), so the
parameters, buffers, hooks and state-dict keys stay the very same objects, and `restore` puts the reference class
back. Each fast `forward` runs the reference computation wherever its own does not apply (autograd, another device
or dtype, an operator that is switched off or could not be built).
"""

from __future__ import annotations

from torch import nn

# reference class -> fast subclass
FAST_MODULES: dict[type[nn.Module], type[nn.Module]] = {}


class FastModule:
    """Mixin of the fast subclasses. `_setup_fast` attaches the private caches after the swap; `_FAST_ATTRIBUTES`
    names them, so that `restore` leaves the reference object as it was."""

    _FAST_ATTRIBUTES: tuple[str, ...] = ()
    _reference_class: type[nn.Module]

    def _setup_fast(self) -> None:
        """Create the private caches (called once the class is swapped)."""


def fast_variant_of(reference: type[nn.Module]):
    """Class decorator: register the decorated subclass as the fast variant of `reference`."""

    def register(fast: type[nn.Module]) -> type[nn.Module]:
        if not issubclass(fast, reference) or not issubclass(fast, FastModule):
            raise TypeError(f"{fast.__name__} must subclass {reference.__name__} and FastModule")
        FAST_MODULES[reference] = fast
        fast._reference_class = reference
        return fast

    return register


def swap_in(model: nn.Module) -> int:
    """Swap every module whose class (exactly) has a fast variant; returns how many were swapped."""
    swapped = 0
    for module in model.modules():
        fast = FAST_MODULES.get(type(module))
        if fast is not None:
            module.__class__ = fast
            module._setup_fast()
            swapped += 1
    return swapped


def swap_out(model: nn.Module) -> int:
    """Put the reference classes back; returns how many modules were restored."""
    restored = 0
    for module in model.modules():
        if isinstance(module, FastModule):
            for name in module._FAST_ATTRIBUTES:
                module.__dict__.pop(name, None)
            module.__class__ = type(module)._reference_class
            restored += 1
    return restored
