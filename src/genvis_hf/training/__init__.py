"""Training: the Accelerate loop (`train`), its optimiser/schedule, evaluation over a data set, Trainer helpers.

Imports are lazy so that `genvis_hf.training` does not pull in Accelerate until a function is used.
"""

from typing import Any

_EXPORTS = {
    "TrainArguments": ".train",
    "train": ".train",
    "SeededSampler": ".train",
    "build_optimizer": ".optim",
    "build_scheduler": ".optim",
    "parameter_groups": ".optim",
    "evaluate_model": ".evaluate",
    "predict_dataset": ".evaluate",
    "ytvis_metrics": ".evaluate",
    "make_compute_metrics": ".hf_trainer",
    "trainer_arguments": ".hf_trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
