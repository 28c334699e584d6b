"""Command-line values checked before any work starts: argparse types for numeric options and devices, and
checks of the folders a command will write. A bad value is one line naming the option; the commands exit with
code 2 for these usage errors (1 is for bad inputs: videos, data, models)."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


class UsageError(ValueError):
    """An option's value or combination cannot work; the message names the option (exit code 2)."""


def _number(text: str, kind: type, description: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _number(text, float, "a number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = _number(text, float, "a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def score_threshold(text: str) -> float:
    """argparse type: a score threshold in [0, 1) (scores are probabilities; 1 or more would keep nothing)."""
    value = _number(text, float, "a score threshold in [0, 1)")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a score threshold in [0, 1), got {text!r} (scores are 0-1)")
    return value


def unit_fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    value = _number(text, float, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def torch_device(text: str) -> str:
    """argparse type: a torch device string (`cpu`, `cuda`, `cuda:1`, `mps`, ...) that this machine has."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (cpu, cuda, cuda:1, mps, ...)") from None
    if device.type == "cpu":
        return text
    backend = getattr(torch, device.type, None) if device.type != "mps" else torch.backends.mps
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine (or this torch build) has no {device.type} device")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.index >= count:
        raise argparse.ArgumentTypeError(f"{text!r}: there are only {count} {device.type} device(s)")
    return text


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(path: str | os.PathLike, option: str = "--output-dir") -> Path:
    """Raise `UsageError` unless `path` is a folder, or can be made one, that this process can write into.
    Nothing is created."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{option} {path}: exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{option} {path}: folder is not writable")
        return path
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: cannot be created, {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot be created, {existing} is not writable")
    return path


def check_new_output_dir(path: str | os.PathLike, option: str, overwrite: bool) -> Path:
    """`check_output_dir` for a folder the command publishes whole by renaming: it must not exist unless
    `overwrite`, and its parent must be writable."""
    path = Path(path)
    if not path.exists():
        return check_output_dir(path, option)
    if not path.is_dir():
        raise UsageError(f"{option} {path}: exists and is not a folder")
    if not overwrite:
        raise UsageError(f"{option} {path}: already exists (pass --overwrite to replace it)")
    parent = Path(os.path.abspath(path)).parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot be replaced, its folder {parent} is not writable")
    return path
