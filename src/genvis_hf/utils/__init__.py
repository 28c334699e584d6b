"""Small process-level helpers."""

from .cpu import tune_memory_allocator

__all__ = ["tune_memory_allocator"]
