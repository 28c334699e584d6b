"""genvis_hf's loggers, under transformers' logging tree.

    from genvis_hf.utils.logging import get_logger
    logger = get_logger(__name__)        # "transformers.genvis_hf.training.train"

The loggers are children of transformers' library logger (`transformers.utils.logging`), so its controls apply to
them as to any transformers module: `transformers.logging.set_verbosity_info()` / `_warning()` / ...,
`TRANSFORMERS_VERBOSITY=info|warning|error|debug`, `transformers.logging.disable_default_handler()`, and its
stderr handler and format. Commands that are applications (`genvis-hf train`) raise genvis_hf's own level to INFO
with `set_command_verbosity`, unless TRANSFORMERS_VERBOSITY says otherwise.
"""

from __future__ import annotations

import logging
import os

from transformers.utils import logging as transformers_logging

ROOT = "transformers.genvis_hf"


def get_logger(name: str) -> logging.Logger:
    """The logger for module `name` (e.g. `genvis_hf.training.train`), a child of transformers' library logger."""
    short = name[len("genvis_hf") :].lstrip(".") if name.startswith("genvis_hf") else name
    return transformers_logging.get_logger(f"{ROOT}.{short}" if short else ROOT)


def set_command_verbosity(level: int = logging.INFO) -> None:
    """What a command line sets: genvis_hf's messages at `level` (transformers' own stay at their level), unless
    the user chose a verbosity with TRANSFORMERS_VERBOSITY."""
    if not os.environ.get("TRANSFORMERS_VERBOSITY"):
        get_logger("genvis_hf").setLevel(level)


__all__ = ["ROOT", "get_logger", "set_command_verbosity"]
