"""`torch.compile` of the inference path, stage by stage, each stage one graph.

Compiled (`torch.compile(..., **compile_kwargs)`, so `fullgraph=True` holds every stage to a single graph):

- the backbone (`model.backbone`);
- the pixel decoder's encoder and FPN (`pixel_decoder.forward_features`);
- the frame decoder's inference pass (`FastFrameDecoder.forward_inference`, or the module on the reference path);
- the object encoder (`object_decoder.encode_clips`) and the object decoder's transformer
  (`object_decoder.decode_queries`), whose memory of M past clips is marked as a dynamic dimension: one graph serves
  every M >= 2 (dynamo specialises M = 0 and 1), so a long video never reaches dynamo's recompile limit and falls
  back to eager.

The clip loop, the memory bookkeeping and post-processing stay in Python. The registered `genvis` operators have
fake implementations, so dynamo traces through them; the fast path's caches of derived weights are built by one
eager warm-up pass first (a compiled model is specialised to its weights: weights changed afterwards need a new
`compile_for_inference`). `torch.export.export` works on the same stages (`export_stages`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..modeling.modeling_genvis import GenVISModel
from .frame_decoder import FastFrameDecoder

COMPILED_ATTRIBUTES = ("forward_features", "forward_inference", "encode_clips", "decode_queries")


def _with_dynamic_memory(compiled_decode_queries):
    """The compiled `decode_queries`, called with the memory length (dim 1 of the memory keys / values) marked as
    a dynamic dimension (marked outside the compiled function, as dynamo requires)."""

    def decode_queries(frame_tokens, queries, memory_keys, memory_values, num_frames):
        if memory_keys is not None:
            torch._dynamo.maybe_mark_dynamic(memory_keys, 1)
            torch._dynamo.maybe_mark_dynamic(memory_values, 1)
        return compiled_decode_queries(frame_tokens, queries, memory_keys, memory_values, num_frames)

    return decode_queries


def _warm_up(model: GenVISModel) -> None:
    """One small eager forward: builds the fast path's caches of derived weights for the model's dtype."""
    size = model.config.size_divisibility * 2
    pixel_values = torch.zeros(1, 1, 3, size, size, dtype=model.dtype, device=model.device)
    with torch.no_grad():
        model(pixel_values)


def compile_for_inference(model: nn.Module, **compile_kwargs) -> None:
    """Compile `model`'s inference stages in place (see the module docstring); `compile_kwargs` go to
    `torch.compile` (e.g. `fullgraph=True`, `backend="inductor"`, `mode="max-autotune-no-cudagraphs"`)."""
    for base in [module for module in model.modules() if isinstance(module, GenVISModel)]:
        _warm_up(base)
        base.backbone.compile(**compile_kwargs)
        pixel_decoder, frame_decoder, object_decoder = base.pixel_decoder, base.frame_decoder, base.object_decoder
        pixel_decoder.forward_features = torch.compile(pixel_decoder.forward_features, **compile_kwargs)
        if isinstance(frame_decoder, FastFrameDecoder):
            frame_decoder.forward_inference = torch.compile(frame_decoder.forward_inference, **compile_kwargs)
        else:
            frame_decoder.compile(**compile_kwargs)
        object_decoder.encode_clips = torch.compile(object_decoder.encode_clips, **compile_kwargs)
        object_decoder.decode_queries = _with_dynamic_memory(
            torch.compile(object_decoder.decode_queries, **compile_kwargs)
        )


def remove_compilation(model: nn.Module) -> None:
    """Undo `compile_for_inference` (the eager stages run again)."""
    for module in model.modules():
        for name in COMPILED_ATTRIBUTES:
            module.__dict__.pop(name, None)
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None


class _Stage(nn.Module):
    """One method of a module as the `forward` of a module (what `torch.export.export` takes); `output`, when
    given, picks the tensors out of a dataclass result."""

    def __init__(self, module: nn.Module, method: str, output: str | None = None):
        super().__init__()
        self.module = module
        self.method = method
        self.output = output

    def forward(self, *args):
        result = getattr(self.module, self.method)(*args)
        return result if self.output is None else getattr(result, self.output)


def export_stages(model: GenVISModel, images: torch.Tensor) -> dict[str, torch.export.ExportedProgram]:
    """`torch.export.export` of the per-frame stages on `images` `[N, 3, H, W]` (normalised, padded frames):
    `"backbone"` (images -> res2..res5), `"pixel_decoder"` (res2..res5 -> the encoder's levels and the stride-4
    map) and, on the fast path, `"frame_decoder"` (levels and the mask features at their sizes -> the frame queries
    `[1, N, fQ, C]`).
    The fast path's operators appear in the graphs as `torch.ops.genvis.*` calls."""
    from .pixel_decoder import level_mask_features

    _warm_up(model)
    programs = {}
    with torch.no_grad():
        programs["backbone"] = torch.export.export(model.backbone, (images,))
        features = [f.contiguous(memory_format=torch.channels_last) for f in model.backbone(images)]
        programs["pixel_decoder"] = torch.export.export(_Stage(model.pixel_decoder, "forward_features"), (features,))
        levels, stride4 = model.pixel_decoder.forward_features(features)
        if isinstance(model.frame_decoder, FastFrameDecoder):
            masks = level_mask_features(model.pixel_decoder, stride4, [tuple(x.shape[-2:]) for x in levels])
            programs["frame_decoder"] = torch.export.export(
                _Stage(model.frame_decoder, "forward_inference", "frame_queries"), (levels, masks)
            )
    return programs
