"""One-line error messages: what the command line, the backends and the exporters print for an exception."""

from __future__ import annotations


def one_line(error: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line (line breaks and whitespace runs collapsed), cut to `limit` characters; `Type`
    alone when the exception has no message."""
    text = " ".join(str(error).split())
    line = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
