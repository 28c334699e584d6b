"""One-line error messages: what a command prints for a failure it did not raise itself."""

from __future__ import annotations


def one_line(error: BaseException, limit: int = 300) -> str:
    """`Type: message` with the message's whitespace (newlines included) collapsed and cut to `limit` characters."""
    text = " ".join(str(error).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
