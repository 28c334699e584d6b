"""The clip loop at inference: the per-frame stages on chunks of whole clips, the pixel decoder frame by frame on
CPUs, the object encoder once per chunk, GenVIS mask features written straight into one video-wide tensor.

`fast_forward_video_group` stands in for `GenVISModel.forward_video_group` on an optimised model (the instance's
method is replaced by `optimize_for_inference`); training and autograd run the reference loop. Every frame of the
per-frame stages is independent of the others and the object encoder is independent per clip, so the outputs
equal the reference loop's up to float rounding (the batched products round differently).
"""

from __future__ import annotations

import math

import torch

from .. import settings
from ..modeling.batching import concatenate_frames
from ..modeling.modeling_genvis import ClipOutput, FrameStagesOutput, GenVISModel
from ..modeling.object_decoder import ClipMemory, GenVISObjectDecoder
from ..modeling.pixel_decoder import GenVISPixelDecoder
from .frame_decoder import FastFrameDecoder
from .pixel_decoder import level_mask_features


def inference_chunk_length(clip_length: int, frames_per_call: int | None = None) -> int:
    """Frames per call of the per-frame stages at inference: the fewest whole clips that make at least
    `frames_per_call` (`genvis_hf.settings`, default 4) frames (online 4 clips of 1, semi-online 2 clips of 3). On
    CPUs the backbone's convolutions and the frame decoder's 100-query products run faster per frame on a few
    frames than on one. A caller that feeds a video in pieces (`genvis_hf.inference`) cuts it at multiples of this
    length, so that its results equal one call on the whole video bit for bit."""
    frames_per_call = frames_per_call or settings.frames_per_call()
    return clip_length * max(1, math.ceil(frames_per_call / clip_length))


def project_mask_features(object_decoder: GenVISObjectDecoder, stride4_features: torch.Tensor,
                          out: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """`object_decoder.project_mask_features` as the batched product `W [D, C] x X [N, C, H*W]`, which returns the
    contiguous (NCHW) layout whatever the input's: these maps are concatenated over the video and multiplied with
    the mask embeddings in post-processing, both of which want that layout (a channels-last result costs a
    transposing copy there). `out`: optional contiguous `[N, D, H, W]` to write into (a slice of a video-wide
    tensor, which saves concatenating the frames afterwards)."""
    projection = object_decoder.mask_projection
    batch, _, height, width = stride4_features.shape
    weight = projection.weight.flatten(1).expand(batch, -1, -1)  # [N, D, C]
    pixels = stride4_features.flatten(2)  # [N, C, H*W] (a view for NCHW and channels-last inputs)
    target = None if out is None else out.view(batch, -1, height * width)
    if projection.bias is None:
        projected = torch.bmm(weight, pixels, out=target)
    else:
        projected = torch.baddbmm(projection.bias.view(1, -1, 1), weight, pixels, out=target)
    return projected.view(batch, -1, height, width)


def _pixel_stage(pixel_decoder: GenVISPixelDecoder, object_decoder: GenVISObjectDecoder,
                 features: list[torch.Tensor], full_mask_features: bool, mask_features_out: torch.Tensor | None):  # fmt: skip
    """(multi-scale features, stride-4 map, frame decoder mask features at the levels' sizes, the full-resolution
    ones if asked for, GenVIS mask features) of a batch of frames."""
    levels, stride4 = pixel_decoder.forward_features(features)
    sizes = [tuple(x.shape[-2:]) for x in levels]
    masks_at_levels = level_mask_features(pixel_decoder, stride4, sizes)
    full = pixel_decoder.mask_projection(stride4) if full_mask_features else None
    if mask_features_out is not None and mask_features_out.shape[-2:] != stride4.shape[-2:]:
        mask_features_out = None  # a backbone whose stride-4 map is not exactly H/4 x W/4
    return levels, stride4, masks_at_levels, full, project_mask_features(object_decoder, stride4, mask_features_out)


def fast_forward_frames(model: GenVISModel, images: torch.Tensor, output_hidden_states: bool = False,
                        mask_features_out: torch.Tensor | None = None) -> FrameStagesOutput:  # fmt: skip
    """`GenVISModel.forward_frames` at inference (no loss inputs). On CPUs the pixel decoder runs one frame at a
    time, which keeps a frame's activations in cache, while the backbone and the frame decoder (100-query products,
    which use the cores better on several frames) run on the whole batch (timings: docs/performance.md).
    `mask_features_out` (contiguous `[N, mask_dim, H/4, W/4]`) receives the GenVIS mask features."""
    backbone_features = model.backbone(images)  # 4 x [N, C_i, H_i, W_i]
    features = [f.contiguous(memory_format=torch.channels_last) for f in backbone_features]
    if images.device.type == "cpu" and images.shape[0] > 1:
        parts = [
            _pixel_stage(model.pixel_decoder, model.object_decoder, [f[i : i + 1] for f in features],
                         output_hidden_states, None if mask_features_out is None else mask_features_out[i : i + 1])
            for i in range(images.shape[0])
        ]  # fmt: skip
        levels, stride4, masks_at_levels, full, genvis_masks = (
            [torch.cat(level) for level in zip(*(p[0] for p in parts))],
            torch.cat([p[1] for p in parts]),
            [torch.cat(level) for level in zip(*(p[2] for p in parts))],
            torch.cat([p[3] for p in parts]) if output_hidden_states else None,
            concatenate_frames([p[4] for p in parts]),
        )
    else:
        levels, stride4, masks_at_levels, full, genvis_masks = _pixel_stage(
            model.pixel_decoder, model.object_decoder, features, output_hidden_states, mask_features_out
        )
    frame_decoder = model.frame_decoder
    if isinstance(frame_decoder, FastFrameDecoder) and frame_decoder._fast_layers():
        frame_output = frame_decoder.forward_inference(levels, masks_at_levels)
    else:
        full = full if full is not None else model.pixel_decoder.mask_projection(stride4)
        frame_output = frame_decoder(levels, full)
    return FrameStagesOutput(
        frame_queries=frame_output.frame_queries,
        mask_features=genvis_masks,
        backbone_features=backbone_features if output_hidden_states else None,
        pixel_decoder_features=[*levels, stride4, full] if output_hidden_states else None,
    )


def encode_whole_clips(model: GenVISModel, frame_queries: torch.Tensor, group: int,
                       clip_length: int) -> list[torch.Tensor]:  # fmt: skip
    """The object encoder's frame tokens of a chunk's whole clips, encoded in one batch (the encoder is independent
    per clip, and its 100-query products use the cores better on several clips).

    frame_queries: the chunk's last-head frame queries, `[G * Tk, fQ, C]`, video-major. Returns one
    `[G, Tc * fQ, C]` tensor per whole clip, in order (a shorter last clip is encoded on its own)."""
    per_video = frame_queries.unflatten(0, (group, -1))  # [G, Tk, fQ, C]
    whole = per_video.shape[1] // clip_length
    if whole == 0:
        return []
    clips = per_video[:, : whole * clip_length].unflatten(1, (whole, clip_length))  # [G, n, Tc, fQ, C]
    tokens = model.object_decoder.encode_clips(clips.transpose(0, 1).flatten(0, 1))  # [n * G, Tc * fQ, C]
    return list(tokens.unflatten(0, (whole, group)))


def fast_forward_video_group(model: GenVISModel, pixel_values: torch.Tensor, clip_memory: ClipMemory | None = None,
                             output_hidden_states: bool = False, output_loss_inputs: bool = False,
                             clip_length: int | None = None) -> tuple[list[ClipOutput], ClipMemory]:  # fmt: skip
    """`GenVISModel.forward_video_group` at inference (see the module docstring); the reference loop when training
    or under autograd."""
    if output_loss_inputs or torch.is_grad_enabled():
        return GenVISModel.forward_video_group(model, pixel_values, clip_memory, output_hidden_states,
                                               output_loss_inputs, clip_length)  # fmt: skip
    memory = clip_memory if clip_memory is not None else ClipMemory()
    clip_length = clip_length or model.config.clip_length
    chunk_length = inference_chunk_length(clip_length)
    group, num_frames = pixel_values.shape[:2]
    # One video: the GenVIS mask features are written straight into one video-wide tensor (the outputs then take
    # it without concatenating the frames: 12 MB a frame at 384x480).
    video_mask_features = None
    if group == 1:
        height, width = (s // model.config.common_stride for s in pixel_values.shape[-2:])
        video_mask_features = pixel_values.new_empty((num_frames, model.config.mask_dim, height, width))
    outputs = []
    for chunk_start in range(0, num_frames, chunk_length):
        chunk = pixel_values[:, chunk_start : chunk_start + chunk_length]  # [G, Tk, 3, H, W]
        chunk_frames = chunk.shape[1]
        out = None if video_mask_features is None else video_mask_features[chunk_start : chunk_start + chunk_frames]
        stages = fast_forward_frames(model, chunk.flatten(0, 1), output_hidden_states, out)  # G * Tk frames
        tokens = encode_whole_clips(model, stages.frame_queries[-1], group, clip_length)
        for clip_index, start in enumerate(range(0, chunk_frames, clip_length)):
            end = min(start + clip_length, chunk_frames)
            # A slice of the flat frame dim for one video: a view through unflatten would carry an odd batch
            # stride, on which the pixel decoder's oneDNN convolutions ran ~20% slower.
            rows = (
                slice(start, end)
                if group == 1
                else [g * chunk_frames + t for g in range(group) for t in range(start, end)]
            )
            clip_stages = stages.select(rows)
            if clip_index < len(tokens):
                object_output = model.object_decoder.decode(tokens[clip_index], memory, num_frames=end - start)
            else:  # a shorter last clip
                object_output = model.object_decoder(clip_stages.frame_queries[-1].unflatten(0, (group, -1)), memory)
            clip = ClipOutput.from_stages(clip_stages, object_output, group)
            memory = object_output.memory
            outputs.append(clip)
    return outputs, memory
