"""genvis_hf's jit-compiled multi-scale deformable attention in the layout of a `kernels` repository, so the
`kernels` library loads it with `LocalLayerRepository` / `get_local_kernel` and `kernelize` swaps it in
exactly as it swaps in a Hub kernel. The compiled code itself lives in `genvis_hf` (built on first use)."""

from . import layers

__all__ = ["layers"]
