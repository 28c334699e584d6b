"""Writing files so that a reader never sees half of one: write a temporary file beside it, then rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` (UTF-8) through a temporary file in the same folder renamed over it, with the mode
    a plain `open(path, "w")` would give (0644 under the usual umask); the folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temp, 0o644 & ~current_umask())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
