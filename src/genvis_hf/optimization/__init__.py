"""genvis_hf's fast path for inference: one explicit step that turns the reference model into a faster one.

`optimize_for_inference(model)` swaps every module that has a fast variant for it (the class of the live module
object changes; parameters, buffers and state-dict keys stay the same objects) and replaces the model's clip loop
with a chunked one; `restore_reference(model)` undoes both. `import genvis_hf` registers this layer with the model
(`GenVISPreTrainedModel.fast_path`), so that `model.eval()` applies it (when `genvis_hf.settings.optimize_on_eval`,
the default) and `model.train()` undoes it: `from_pretrained`, the pipeline, `segment_video`, the CLI and a plain
`model(**inputs)` after `eval()` all get it. `settings_override(optimize_on_eval=False)` around `eval()`, or
`model.restore_reference()`, gives the reference path.

What it changes, each equal to the reference up to float rounding (tests/test_optimization.py, and the parity tests
run both paths):

| reference module (`modeling/`)   | fast variant                     | what is faster                                  |
|----------------------------------|----------------------------------|-------------------------------------------------|
| `nn.Linear`                      | `layers.OneDNNLinear`            | large products as oneDNN 1x1 convs where BLAS is slow |
| `GenVISAttention`                | `layers.FastGenVISAttention`     | `masked_attention` operator for boolean masks   |
| `FeedForwardLayer`               | `layers.FusedFeedForwardLayer`   | ReLU and residual as post-ops                   |
| `ConvNormActivation`             | `layers.WinogradConvNormActivation` | 3x3 convs by Winograd                       |
| `ConvFrozenBN` (ResNet)          | `resnet.FusedConvFrozenBN`       | BN folded, add + ReLU post-ops, Winograd 3x3    |
| `MultiScaleDeformableAttention`  | `pixel_decoder.FusedMultiScaleDeformableAttention` | core from the projections    |
| `DeformableEncoderLayer`         | `pixel_decoder.FusedDeformableEncoderLayer` | residuals and ReLU as post-ops       |
| `GenVISFrameDecoder`             | `frame_decoder.FastFrameDecoder` | level-size masks, shared K/V projections        |
| `SwinBlock`, `SwinStage`         | `swin.FastSwinBlock`, `swin.FastSwinStage` | window attention operator, no padding products, gathers instead of pad/roll/partition copies |
| `GenVISModel.forward_video_group`| `clip_loop.fast_forward_video_group` | chunks of frames, per-frame pixel decoder   |

Every fast forward falls back to the reference computation where it does not apply (autograd, training with
dropout, another device or dtype, an operator switched off in `genvis_hf.settings` or not buildable here).

On a CPU it also tunes glibc's allocator for the process once (`settings.tune_allocator`, on by default;
`genvis_hf.utils.cpu.tune_memory_allocator`): PyTorch has no caching allocator on CPUs, and without it every
activation of tens of MB is a fresh `mmap` whose pages are faulted in and zeroed again (docs/performance.md).
"""

from __future__ import annotations

import types

from torch import nn

from .. import settings
from ..modeling.modeling_genvis import GenVISModel, GenVISPreTrainedModel
from ..utils.cpu import tune_memory_allocator
from . import frame_decoder, layers, pixel_decoder, resnet, swin  # noqa: F401  (register the fast modules)
from .clip_loop import fast_forward_video_group, inference_chunk_length
from .compile import compile_for_inference
from .registry import FastModule, swap_in, swap_out

__all__ = [
    "FastPath",
    "compile_for_inference",
    "inference_chunk_length",
    "is_optimized",
    "optimize_for_inference",
    "register_fast_path",
    "restore_reference",
]

_LOOP_ATTRIBUTE = "forward_video_group"
_KEEP_REFERENCE = "_genvis_keep_reference"  # set by an explicit restore_reference(): eval() then leaves it alone


def _base_models(model: nn.Module) -> list[GenVISModel]:
    return [module for module in model.modules() if isinstance(module, GenVISModel)]


def _genvis_models(model: nn.Module) -> list[GenVISPreTrainedModel]:
    return [module for module in model.modules() if isinstance(module, GenVISPreTrainedModel)]


def _apply(model: nn.Module) -> None:
    if settings.tune_allocator() and any(p.device.type == "cpu" for p in model.parameters()):
        tune_memory_allocator()  # see its docstring: large activation buffers reused instead of mmap'ed anew
    swap_in(model)
    for base in _base_models(model):
        setattr(base, _LOOP_ATTRIBUTE, types.MethodType(fast_forward_video_group, base))


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """Swap in the fast modules and the chunked clip loop (idempotent); returns `model`. Usually not called
    directly: `model.eval()` does it (see the module docstring)."""
    for genvis in _genvis_models(model):
        genvis.__dict__.pop(_KEEP_REFERENCE, None)
    _apply(model)
    return model


def restore_reference(model: nn.Module, *, keep: bool = True) -> nn.Module:
    """Put the reference modules and clip loop back (idempotent); returns `model`. With `keep` (an explicit call),
    later `eval()` calls leave the reference in place until `optimize_for_inference(model)`."""
    if keep:
        for genvis in _genvis_models(model):
            genvis.__dict__[_KEEP_REFERENCE] = True
    swap_out(model)
    for base in _base_models(model):
        base.__dict__.pop(_LOOP_ATTRIBUTE, None)
    return model


def is_optimized(model: nn.Module) -> bool:
    """Whether `optimize_for_inference` is in effect on `model`."""
    return any(_LOOP_ATTRIBUTE in base.__dict__ for base in _base_models(model)) or any(
        isinstance(module, FastModule) for module in model.modules()
    )


class FastPath:
    """The object registered as `GenVISPreTrainedModel.fast_path`."""

    def on_mode_change(self, model: nn.Module, training: bool) -> None:
        if training:
            restore_reference(model, keep=False)
        elif settings.optimize_on_eval() and _KEEP_REFERENCE not in model.__dict__:
            _apply(model)

    def optimize(self, model: nn.Module) -> None:
        optimize_for_inference(model)

    def restore(self, model: nn.Module) -> None:
        restore_reference(model)

    def compile(self, model: nn.Module, **compile_kwargs) -> None:
        compile_for_inference(model, **compile_kwargs)

    def chunk_length(self, model: nn.Module, clip_length: int) -> int:
        """Frames per model call at which a caller feeding a video in pieces must cut it (see
        `inference_chunk_length`): the chunk length when `model` is optimised, else the clip length."""
        return inference_chunk_length(clip_length) if is_optimized(model) else clip_length


def register_fast_path() -> None:
    """Make `eval()` / `train()` of GenVIS models apply / undo the fast path (called by `import genvis_hf`)."""
    GenVISPreTrainedModel.fast_path = FastPath()
