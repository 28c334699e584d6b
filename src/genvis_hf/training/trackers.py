"""`genvis-hf train --report-to`: Accelerate's experiment trackers, checked before training starts.

    names = resolve_trackers(["tensorboard"])    # raises TrackerError (one line) for unknown or uninstalled ones
    Accelerator(log_with=names, project_dir=OUT, ...)  -> accelerator.init_trackers(...), accelerator.log(...)

TensorBoard writes its event files under `OUT/runs/`; the others go where their own configuration sends them.
"""

from __future__ import annotations

from typing import Any

# tracker name -> (accelerate availability check, what `pip install` brings it)
_TRACKERS = {
    "tensorboard": ("is_tensorboard_available", "tensorboard"),
    "wandb": ("is_wandb_available", "wandb"),
    "trackio": ("is_trackio_available", "trackio"),
    "comet_ml": ("is_comet_ml_available", "comet-ml"),
    "mlflow": ("is_mlflow_available", "mlflow"),
    "clearml": ("is_clearml_available", "clearml"),
    "dvclive": ("is_dvclive_available", "dvclive"),
    "aim": ("is_aim_available", "aim"),
    "swanlab": ("is_swanlab_available", "swanlab"),
}
LOGGING_SUBDIR = "runs"


class TrackerError(ValueError):
    """A `--report-to` entry cannot be used; the message says why and what to install."""


def resolve_trackers(names: list[str] | None) -> list[str]:
    """The trackers to log to: `none` (or nothing) is none, `all` every installed one; an unknown or uninstalled
    name raises `TrackerError` naming the `pip install` that brings it."""
    import accelerate.utils as accelerate_utils

    requested = [n.strip() for name in names or [] for n in name.split(",") if n.strip()]
    if not requested or requested == ["none"]:
        return []

    def installed(name: str) -> bool:
        return bool(getattr(accelerate_utils, _TRACKERS[name][0])())

    if requested == ["all"]:
        return [name for name in _TRACKERS if installed(name)]
    for name in requested:
        if name not in _TRACKERS:
            raise TrackerError(f"--report-to {name}: unknown tracker (choose from {', '.join(_TRACKERS)}, all, none)")
        if not installed(name):
            raise TrackerError(f"--report-to {name} needs its package: pip install {_TRACKERS[name][1]}")
    return list(dict.fromkeys(requested))


def hyperparameters(values: dict[str, Any]) -> dict[str, Any]:
    """The run's arguments as trackers accept them (TensorBoard's hparams: numbers, strings and booleans only)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if value is None or isinstance(value, (bool, int, float, str)):
            flat[key] = "" if value is None else value
    return flat


__all__ = ["LOGGING_SUBDIR", "TrackerError", "hyperparameters", "resolve_trackers"]
