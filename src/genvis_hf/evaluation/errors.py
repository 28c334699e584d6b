"""Exceptions raised by the YouTube-VIS / OVIS evaluation code."""

from __future__ import annotations


class YTVISFormatError(ValueError):
    """A ground-truth or results file does not follow the YouTube-VIS layout.

    The message always names the offending item (``results[12] (video_id=3)``, ``annotations[4] (id=9)``,
    ``videos[2]``...) and says what is wrong with it, so that it can be shown to a user as a single line.
    """
