"""CPU process tuning that an application (not a library import) opts into."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import platform

logger = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_tuned = False


def tune_memory_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = (1 << 31) - 1) -> bool:
    """Make glibc keep freed large blocks for reuse instead of returning them to the operating system.

    PyTorch has no caching allocator on CPUs: every activation of tens of MB is a fresh `mmap`, whose pages the
    kernel faults in and zeroes again on first touch, a noticeable share of video inference (docs/performance.md).
    With large `mmap`/trim thresholds the heap keeps those blocks, so peak memory is unchanged but the process does
    not shrink after a peak. Process-wide and irreversible: the `genvis-hf` commands call it, and so does the fast
    path when it is applied to a model on a CPU (`genvis_hf.settings` `tune_allocator`, on by default); a library
    import never does. Returns False (and changes nothing) without glibc.
    """
    global _tuned
    if _tuned:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
        )
    except (OSError, AttributeError):
        return False
    _tuned = ok
    if ok:
        logger.info("glibc malloc: mmap threshold %d, trim threshold %d", mmap_threshold, trim_threshold)
    return ok


@functools.cache
def cpu_vendor() -> str:
    """The x86 `vendor_id` of this machine's CPU ("GenuineIntel", "AuthenticAMD", ...), or "" when unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "GenuineIntel" if "Intel" in platform.processor() else ""
