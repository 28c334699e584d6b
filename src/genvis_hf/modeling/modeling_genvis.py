"""GenVIS for video instance segmentation: the composition root.

    pixel_values [B, T, 3, H, W]
      └─ per clip of W frames (the last one may be shorter, never padded):
           backbone ─► pixel decoder ─► frame decoder ─► frame queries [Tc, fQ, C]
                                      └► stride-4 map ─► object decoder's mask projection ─► mask features
           object decoder(frame queries, ClipMemory) ─► clip-query logits / mask embeddings, ClipMemory'

Videos of one batch are processed in groups of identical (length, padded size): the original has no
padding mask, so a video padded up to a larger one would give different results; grouping makes each
video's output equal to running it alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..configuration.configuration_genvis import GenVISConfig
from .backbone_resnet import ConvFrozenBN, GenVISResNetBackbone
from .backbone_swin import GenVISSwinBackbone, SwinMlp, SwinPatchMerging, SwinWindowAttention, relative_position_index
from .deformable_attention import MultiScaleDeformableAttention, resolve_backend
from .frame_decoder import GenVISFrameDecoder
from .input_checks import check_pixel_inputs
from .layers import FrozenBatchNorm2d, GenVISAttention
from .object_decoder import ClipMemory, GenVISObjectDecoder, ObjectDecoderOutput
from .pixel_decoder import GenVISPixelDecoder, PixelDecoderOutput


@dataclass
class GenVISModelOutput(ModelOutput):
    r"""Outputs of [`GenVISModel`] (and, with `loss`, of [`GenVISForVideoInstanceSegmentation`]).

    Per-clip tensors are padded to the batch's largest clip count, per-frame tensors to its longest video and
    largest stride-4 map; `video_lengths`, `num_clips`, `image_sizes` and `padded_image_sizes` say what is real.

    Args:
        class_queries_logits (`torch.FloatTensor` of shape `[B, num_clips, cQ, num_classes + 1]`):
            Clip-query class logits of each clip (last decoder layer), "no object" last.
        mask_embeddings (`torch.FloatTensor` of shape `[B, num_clips, cQ, mask_dim]`):
            Clip-query mask embeddings of each clip; a query's mask on frame t of clip c is
            `mask_embeddings[:, c, q] @ mask_features[:, t]`.
        mask_features (`torch.FloatTensor` of shape `[B, T, mask_dim, H/4, W/4]`):
            GenVIS per-pixel mask features (stride 4 of the padded input).
        clip_queries_hidden_states (`torch.FloatTensor` of shape `[B, num_clips, cQ, C]`):
            Normalised last-layer clip queries (what the heads and the memory read).
        propagated_queries (`torch.FloatTensor` of shape `[B, num_clips, cQ, C]`):
            Raw last-layer output of each clip: the query the next clip starts from.
        memory_keys, memory_values (`torch.FloatTensor` of shape `[B, num_clips, cQ, C]`):
            The memory entry each clip wrote.
        frame_queries (`torch.FloatTensor` of shape `[B, T, fQ, C]`):
            Normalised last-layer frame-decoder queries of every frame.
        video_lengths (`torch.LongTensor` of shape `[B]`): frames of each video.
        num_clips (`torch.LongTensor` of shape `[B]`): clips of each video.
        clip_lengths (`torch.LongTensor` of shape `[B, num_clips]`): frames of each clip (0 for padding).
        image_sizes (`torch.LongTensor` of shape `[B, 2]`): unpadded (height, width) of each video's frames.
        padded_image_sizes (`torch.LongTensor` of shape `[B, 2]`): each video's own size padded to
            `size_divisibility`, the size its masks are upsampled to before cropping.
        clip_memory (`ClipMemory`): state after the last clip, to continue the same video(s) with a later call.
        backbone_hidden_states (`tuple(torch.FloatTensor)`, with `output_hidden_states`): res2..res5, each
            `[B, T, C_i, H_i, W_i]`.
        pixel_decoder_hidden_states (`tuple(torch.FloatTensor)`, with `output_hidden_states`): the three encoder
            levels (coarse to fine), the stride-4 map and the frame decoder's mask features, each `[B, T, ...]`.
        loss (`torch.FloatTensor`, training only), loss_dict (`dict[str, torch.Tensor]`, training only).
    """

    loss: torch.FloatTensor | None = None
    class_queries_logits: torch.FloatTensor | None = None
    mask_embeddings: torch.FloatTensor | None = None
    mask_features: torch.FloatTensor | None = None
    clip_queries_hidden_states: torch.FloatTensor | None = None
    propagated_queries: torch.FloatTensor | None = None
    memory_keys: torch.FloatTensor | None = None
    memory_values: torch.FloatTensor | None = None
    frame_queries: torch.FloatTensor | None = None
    video_lengths: torch.LongTensor | None = None
    num_clips: torch.LongTensor | None = None
    clip_lengths: torch.LongTensor | None = None
    image_sizes: torch.LongTensor | None = None
    padded_image_sizes: torch.LongTensor | None = None
    clip_memory: ClipMemory | None = None
    backbone_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    pixel_decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    loss_dict: dict[str, torch.Tensor] | None = None


GenVISVideoInstanceSegmentationOutput = GenVISModelOutput


@dataclass
class ClipOutput:
    """What one clip of a group of G videos produces (internal to the clip loop)."""

    object_output: ObjectDecoderOutput  # LB = L * G sequences
    mask_features: torch.Tensor  # [G, Tc, mask_dim, H/4, W/4]
    frame_queries: torch.Tensor  # [G, Tc, fQ, C] (last frame-decoder layer)
    backbone_features: list[torch.Tensor] | None = None  # each [G, Tc, C, H, W]
    pixel_decoder_features: list[torch.Tensor] | None = None  # each [G, Tc, C, H, W]
    # Training only (`output_loss_inputs`): every frame-decoder prediction head, index 0 = before any layer.
    frame_class_logits: list[torch.Tensor] | None = None  # each [G, Tc, fQ, K+1]
    frame_mask_logits: list[torch.Tensor] | None = None  # each [G, Tc, fQ, H/4, W/4]


@dataclass
class FrameStagesOutput:
    """What the per-frame stages produce for a batch of N frames (internal)."""

    frame_queries: torch.Tensor  # [heads kept, N, fQ, C]
    mask_features: torch.Tensor  # [N, mask_dim, H/4, W/4] (GenVIS mask features)
    backbone_features: list[torch.Tensor] | None = None  # 4 x [N, C_i, H_i, W_i]
    pixel_decoder_features: list[torch.Tensor] | None = None  # 5 x [N, C, H_l, W_l]
    class_logits: list[torch.Tensor] | None = None  # training: per head [N, fQ, K+1]
    mask_logits: list[torch.Tensor] | None = None  # training: per head [N, fQ, H/4, W/4]

    def select(self, frames: slice | list[int]) -> FrameStagesOutput:
        """The outputs of some of the N frames (a slice keeps views)."""

        def pick(tensors: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
            return None if tensors is None else [t[frames] for t in tensors]

        return FrameStagesOutput(
            frame_queries=self.frame_queries[:, frames],
            mask_features=self.mask_features[frames],
            backbone_features=pick(self.backbone_features),
            pixel_decoder_features=pick(self.pixel_decoder_features),
            class_logits=pick(self.class_logits),
            mask_logits=pick(self.mask_logits),
        )


@dataclass
class _PixelStage:
    """The pixel decoder's outputs for a batch of frames, plus what the later stages derive from them (internal)."""

    pixels: PixelDecoderOutput
    level_mask_features: list[torch.Tensor] | None  # frame mask features at the 3 levels' sizes (inference)
    genvis_mask_features: torch.Tensor  # [N, mask_dim, H/4, W/4]

    @staticmethod
    def concatenate(parts: list[_PixelStage]) -> _PixelStage:
        def join(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
            return None if tensors[0] is None else concatenate_frames(tensors)

        def join_levels(levels: list[list[torch.Tensor] | None]) -> list[torch.Tensor] | None:
            return None if levels[0] is None else [torch.cat(level) for level in zip(*levels)]

        return _PixelStage(
            pixels=PixelDecoderOutput(
                multi_scale_features=join_levels([p.pixels.multi_scale_features for p in parts]),
                stride4_features=join([p.pixels.stride4_features for p in parts]),
                mask_features=join([p.pixels.mask_features for p in parts]),
            ),
            level_mask_features=join_levels([p.level_mask_features for p in parts]),
            genvis_mask_features=join([p.genvis_mask_features for p in parts]),
        )


def concatenate_frames(tensors: list[torch.Tensor]) -> torch.Tensor:
    """`torch.cat(tensors)` along dim 0, as a view when the tensors already lie one after the other in one
    contiguous block of memory (e.g. frames written into slices of one video-wide tensor), else a copy."""
    first = tensors[0]
    offset = first.storage_offset()
    for t in tensors:
        adjacent = (
            t.is_contiguous() and t.shape[1:] == first.shape[1:] and t.storage_offset() == offset
            and t.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
        )  # fmt: skip
        if not adjacent:
            return torch.cat(tensors)
        offset += t.numel()
    size = (sum(t.shape[0] for t in tensors), *first.shape[1:])
    return first.as_strided(size, (math.prod(first.shape[1:]), *first.stride()[1:]), first.storage_offset())


def build_backbone(config: GenVISConfig) -> nn.Module:
    if config.backbone_type == "resnet":
        return GenVISResNetBackbone(
            depth=config.resnet_depth,
            stem_out_channels=config.resnet_stem_out_channels,
            res2_out_channels=config.resnet_res2_out_channels,
            width_per_group=config.resnet_width_per_group,
            num_groups=config.resnet_num_groups,
            stride_in_1x1=config.resnet_stride_in_1x1,
            res5_dilation=config.resnet_res5_dilation,
            norm=getattr(config, "resnet_norm", "FrozenBN"),
        )
    return GenVISSwinBackbone(
        embed_dim=config.swin_embed_dim,
        depths=config.swin_depths,
        num_heads=config.swin_num_heads,
        window_size=config.swin_window_size,
        mlp_ratio=config.swin_mlp_ratio,
        qkv_bias=config.swin_qkv_bias,
        qk_scale=config.swin_qk_scale,
        patch_size=config.swin_patch_size,
        patch_norm=config.swin_patch_norm,
        absolute_position_embedding=config.swin_absolute_position_embedding,
        pretrain_image_size=config.swin_pretrain_image_size,
        drop_path_rate=config.swin_drop_path_rate,
    )


class GenVISPreTrainedModel(PreTrainedModel):
    config_class = GenVISConfig
    config: GenVISConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("video",)
    supports_gradient_checkpointing = False
    _no_split_modules = ["GenVISFrameDecoder", "GenVISObjectDecoder", "GenVISPixelDecoder"]

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, then every tensor moved to freshly allocated storage.

        safetensors weights arrive memory-mapped at arbitrary offsets of the file; CPU GEMM kernels take
        different (differently rounded) paths on unaligned data, so a reloaded model would differ from the
        saved one in the last bits. Copying into new (64-byte aligned) storage makes a save/load round trip
        bitwise identical and detaches the model from the file.
        """
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                if tensor.device.type == "cpu" and tensor.data_ptr() % 64:
                    tensor.data = tensor.data.clone()
        return loaded

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialisation of the original code, module by module (weights of a checkpoint replace it)."""
        if isinstance(module, MultiScaleDeformableAttention):
            init.constant_(module.sampling_offsets.weight, 0.0)
            thetas = torch.arange(module.num_heads, dtype=torch.float32) * (2.0 * math.pi / module.num_heads)
            grid = torch.stack([thetas.cos(), thetas.sin()], -1)
            grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(module.num_heads, 1, 1, 2)
            grid = grid.repeat(1, module.num_levels, module.num_points, 1)
            for i in range(module.num_points):
                grid[:, :, i, :] *= i + 1
            init.copy_(module.sampling_offsets.bias, grid.view(-1))
            init.constant_(module.attention_weights.weight, 0.0)
            init.constant_(module.attention_weights.bias, 0.0)
            init.xavier_uniform_(module.value_proj.weight)
            init.constant_(module.value_proj.bias, 0.0)
            init.xavier_uniform_(module.output_proj.weight)
            init.constant_(module.output_proj.bias, 0.0)
        elif isinstance(module, GenVISAttention):
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
            init.xavier_uniform_(module.out_proj.weight)
            init.zeros_(module.out_proj.bias)
        elif isinstance(module, (SwinWindowAttention, SwinMlp, SwinPatchMerging)):
            for linear in module.children():
                if isinstance(linear, nn.Linear):
                    init.trunc_normal_(linear.weight, std=0.02)
                    if linear.bias is not None:
                        init.zeros_(linear.bias)
            if isinstance(module, SwinWindowAttention):
                init.trunc_normal_(module.relative_position_bias_table, std=0.02)
                init.copy_(module.relative_position_index, relative_position_index(module.window_size))
        elif isinstance(module, FrozenBatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.constant_(module.running_var, 1.0 - module.eps)
        elif isinstance(module, ConvFrozenBN):
            init.kaiming_normal_(module.conv.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, GenVISPixelDecoder):
            init.normal_(module.level_embed)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_uniform_(module.weight, a=1)  # detectron2 c2_xavier_fill
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)


def _pad_to(tensor: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Zero-pad the trailing dims of `tensor` (at the end of each dim) up to `size`."""
    pad = []
    for current, target in zip(reversed(tensor.shape[-len(size) :]), reversed(size)):
        pad += [0, target - current]
    return F.pad(tensor, pad) if any(pad) else tensor


def _stack_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack tensors of equal rank, zero-padding every dim to the largest (a view for a single tensor)."""
    if len(tensors) == 1:
        return tensors[0].unsqueeze(0)
    size = [max(t.shape[d] for t in tensors) for d in range(tensors[0].dim())]
    return torch.stack([_pad_to(t, size) for t in tensors])


class GenVISModel(GenVISPreTrainedModel):
    """GenVIS: backbone, pixel decoder, frame decoder and object decoder with clip memory, run clip by clip.

    Its outputs are everything inference needs (clip-query logits, mask embeddings, mask features), so
    `GenVISVideoProcessor.post_process_video_instance_segmentation` works on them directly.
    """

    # Inference: frames per call of the per-frame stages when clips are shorter (whole clips; see
    # `forward_video_group`).
    frames_per_call = 4

    def __init__(self, config: GenVISConfig):
        super().__init__(config)
        self.backbone = build_backbone(config)
        self.pixel_decoder = GenVISPixelDecoder(
            in_channels=config.backbone_channels,
            hidden_dim=config.pixel_decoder_dim,
            mask_dim=config.mask_dim,
            num_encoder_layers=config.pixel_decoder_encoder_layers,
            num_heads=config.pixel_decoder_num_heads,
            num_points=config.pixel_decoder_num_points,
            ffn_dim=config.pixel_decoder_ffn_dim,
            num_transformer_levels=len(config.pixel_decoder_in_features),
            common_stride=config.common_stride,
            dropout=config.pixel_decoder_dropout,
            backend=config.deformable_attention_backend,
        )
        self.frame_decoder = GenVISFrameDecoder(
            in_channels=config.pixel_decoder_dim,
            hidden_dim=config.frame_decoder_hidden_dim,
            mask_dim=config.mask_dim,
            num_queries=config.num_frame_queries,
            num_layers=config.frame_decoder_layers,
            num_heads=config.frame_decoder_num_heads,
            ffn_dim=config.frame_decoder_ffn_dim,
            num_classes=config.num_labels,
            pre_norm=config.frame_decoder_pre_norm,
            enforce_input_projection=config.frame_decoder_enforce_input_projection,
        )
        self.object_decoder = GenVISObjectDecoder(
            hidden_dim=config.object_hidden_dim,
            mask_dim=config.mask_dim,
            pixel_decoder_dim=config.pixel_decoder_dim,
            num_frame_queries=config.num_frame_queries,
            num_queries=config.num_clip_queries,
            num_encoder_layers=config.object_encoder_layers,
            num_decoder_layers=config.object_decoder_layers,
            num_heads=config.object_num_heads,
            ffn_dim=config.object_ffn_dim,
            num_classes=config.num_labels,
            pre_norm=config.object_pre_norm,
            window_size=config.object_encoder_window_size,
            enforce_input_projection=config.object_enforce_input_projection,
            use_similarity_heads=config.use_similarity_heads,
            similarity_use_clip=config.similarity_use_clip,
            deep_supervision=config.object_deep_supervision,
        )
        self.post_init()

    # ------------------------------------------------------------------ deformable attention backend
    def set_deformable_attention_backend(self, backend: str) -> None:
        """Switch the deformable attention backend at run time (`"auto"`, `"kernels"`, `"jit"`, `"torch"`);
        an explicitly named backend that cannot run on this model's device raises a one-line reason."""
        resolve_backend(backend, self.device)
        self.config.deformable_attention_backend = backend
        self.pixel_decoder.set_deformable_attention_backend(backend)

    @property
    def deformable_attention_backend_in_use(self) -> str:
        """The backend that actually runs on this model's device."""
        return resolve_backend(self.config.deformable_attention_backend, self.device)

    def compile_for_inference(self, **compile_kwargs) -> None:
        """Opt-in `torch.compile` of the per-frame stages (backbone, pixel decoder, frame decoder, object
        decoder); the clip loop stays in Python. The first run at each new input size and clip length pays the
        compilation (~15-25 s for the R-50 on 2 CPU cores); results match the eager model within float rounding
        (`tests/test_modeling.py`, `scripts/benchmark.py --compile`: identical labels, scores within 3e-8).

        On CPUs it does not pay: the eager inference path already runs compiled ops (deformable attention,
        Winograd convolutions, masked attention, fused convolutions) that dynamo cannot trace into, so it breaks
        the graph around them, and the object decoder's memory read recompiles as the memory grows until dynamo's
        cache limit makes it fall back to eager; measured 0.93-1.03x the eager speed online and 0.88-0.94x
        semi-online (docs/performance.md)."""
        for module in (self.backbone, self.pixel_decoder, self.frame_decoder, self.object_decoder):
            module.compile(**compile_kwargs)

    # ------------------------------------------------------------------ one clip
    def forward_frames(self, images: torch.Tensor, output_hidden_states: bool = False,
                       output_loss_inputs: bool = False,
                       mask_features_out: torch.Tensor | None = None) -> FrameStagesOutput:  # fmt: skip
        """The per-frame stages on a batch of frames `[N, 3, H, W]`: backbone -> pixel decoder -> frame decoder,
        and the object decoder's mask projection of the stride-4 map. Every frame is independent of the others.
        `mask_features_out` (contiguous `[N, mask_dim, H/4, W/4]`, inference) receives the GenVIS mask features.

        On CPUs at inference the pixel decoder runs one frame at a time, which keeps a frame's activations in
        cache (~20% faster per frame), while the backbone and the frame decoder (100-query products, which run
        ~20% faster per frame on 4 frames than on 1) run on the whole batch. The batching changes results only
        by float rounding."""
        backbone_features = self.backbone(images)  # 4 x [N, C_i, H_i, W_i]
        # Full-resolution frame mask features are needed for training losses and hidden states only; inference
        # needs them at the levels' sizes, where they are cheaper to compute (`level_mask_features`).
        full_mask_features = output_loss_inputs or output_hidden_states
        if images.device.type == "cpu" and not output_loss_inputs and images.shape[0] > 1:
            pixel_stage = _PixelStage.concatenate([
                self._pixel_stage([f[i : i + 1] for f in backbone_features], full_mask_features,
                                  None if mask_features_out is None else mask_features_out[i : i + 1])
                for i in range(images.shape[0])
            ])  # fmt: skip
        else:
            pixel_stage = self._pixel_stage(backbone_features, full_mask_features, mask_features_out)
        pixels = pixel_stage.pixels
        frame_output = self.frame_decoder(
            pixels.multi_scale_features, pixels.mask_features,
            output_all_heads=output_loss_inputs, output_predictions=output_loss_inputs,
            level_mask_features=pixel_stage.level_mask_features,
        )  # fmt: skip
        return FrameStagesOutput(
            frame_queries=frame_output.frame_queries,
            mask_features=pixel_stage.genvis_mask_features,
            backbone_features=backbone_features if output_hidden_states else None,
            pixel_decoder_features=(
                [*pixels.multi_scale_features, pixels.stride4_features, pixels.mask_features]
                if output_hidden_states
                else None
            ),
            class_logits=frame_output.class_logits,
            mask_logits=frame_output.mask_logits,
        )

    def _pixel_stage(self, backbone_features: list[torch.Tensor], full_mask_features: bool,
                     mask_features_out: torch.Tensor | None = None) -> _PixelStage:  # fmt: skip
        pixels = self.pixel_decoder(backbone_features, output_mask_features=full_mask_features)
        level_mask_features = None
        if not full_mask_features:
            sizes = [tuple(x.shape[-2:]) for x in pixels.multi_scale_features]
            level_mask_features = self.pixel_decoder.level_mask_features(pixels.stride4_features, sizes)
        if mask_features_out is not None and mask_features_out.shape[-2:] != pixels.stride4_features.shape[-2:]:
            mask_features_out = None  # a backbone whose stride-4 map is not exactly H/4 x W/4
        genvis_mask_features = self.object_decoder.project_mask_features(pixels.stride4_features, mask_features_out)
        return _PixelStage(pixels, level_mask_features, genvis_mask_features)

    def forward_clip(self, frames: torch.Tensor, memory: ClipMemory, output_hidden_states: bool = False,
                     output_loss_inputs: bool = False,
                     stages: FrameStagesOutput | None = None,
                     frame_tokens: torch.Tensor | None = None) -> ClipOutput:  # fmt: skip
        """Run one clip of a group of G videos of identical size.

        Args:
            frames: `[G, Tc, 3, H, W]`, normalised, H and W multiples of `size_divisibility`.
            memory: the group's `ClipMemory` from the previous clip (empty for the first clip); with
                `output_loss_inputs` it holds L * G sequences.
            output_loss_inputs: training: keep every frame-decoder head's class and mask logits, and feed the
                object decoder the queries of the last L = `config.frame_queries_last_layers` heads as L * G
                sequences (index l * G + g), as the original trains it.
            stages: the per-frame stages' outputs for the clip's G * Tc frames (video-major), when the clip loop
                computed them for several clips at once.
            frame_tokens: the object encoder's output for the clip, `[G, Tc * fQ, C]`, when the clip loop encoded
                several clips at once (inference).
        """
        group, clip_frames = frames.shape[:2]
        if stages is None:
            stages = self.forward_frames(frames.flatten(0, 1), output_hidden_states, output_loss_inputs)

        def per_video(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(0, (group, clip_frames))

        # [G*Tc, fQ, C] -> [G, Tc, fQ, C] (the last head: the only one at inference)
        frame_queries = per_video(stages.frame_queries[-1])
        if output_loss_inputs:
            last = stages.frame_queries[-self.config.frame_queries_last_layers :]  # [L, G*Tc, fQ, C]
            object_output = self.object_decoder(last.unflatten(1, (group, clip_frames)).flatten(0, 1), memory)
        else:
            object_output = self.object_decoder(frame_queries, memory, frame_tokens)

        return ClipOutput(
            object_output=object_output,
            mask_features=per_video(stages.mask_features),
            frame_queries=frame_queries,
            backbone_features=[per_video(f) for f in stages.backbone_features] if output_hidden_states else None,
            pixel_decoder_features=(
                [per_video(f) for f in stages.pixel_decoder_features] if output_hidden_states else None
            ),
            frame_class_logits=[per_video(x) for x in stages.class_logits] if output_loss_inputs else None,
            frame_mask_logits=[per_video(x) for x in stages.mask_logits] if output_loss_inputs else None,
        )

    # ------------------------------------------------------------------ the clip loop
    def forward_video_group(self, pixel_values: torch.Tensor, clip_memory: ClipMemory | None = None,
                            output_hidden_states: bool = False,
                            output_loss_inputs: bool = False,
                            clip_length: int | None = None) -> tuple[list[ClipOutput], ClipMemory]:  # fmt: skip
        """Run G videos of identical length and size clip by clip: `[G, T, 3, H, W]` -> per-clip outputs.

        Clip i holds frames `[i * W, (i + 1) * W)`; the last clip may be shorter. `clip_memory` continues a
        previous call on earlier frames of the same videos (then T should be a multiple of the clip length,
        except for the video's final call). `output_loss_inputs` runs the training variant (see `forward_clip`):
        the memory then carries L * G sequences, one per (frame-decoder layer, video). `clip_length` overrides
        `config.clip_length`."""
        memory = clip_memory if clip_memory is not None else ClipMemory()
        clip_length = clip_length or self.config.clip_length
        chunk_length = clip_length
        if not output_loss_inputs and not torch.is_grad_enabled():
            chunk_length = self.inference_chunk_length(clip_length)
        # Inference on one video: the GenVIS mask features are written straight into one video-wide tensor
        # (`_scatter_group` then takes it without concatenating the frames: 12 MB a frame at 384x480).
        video_mask_features = None
        if chunk_length > clip_length and pixel_values.shape[0] == 1:
            height, width = (s // self.config.common_stride for s in pixel_values.shape[-2:])
            video_mask_features = pixel_values.new_empty((pixel_values.shape[1], self.config.mask_dim, height, width))
        outputs = []
        for chunk_start in range(0, pixel_values.shape[1], chunk_length):
            chunk = pixel_values[:, chunk_start : chunk_start + chunk_length]  # [G, Tk, 3, H, W]
            group, chunk_frames = chunk.shape[:2]
            chunk_stages, chunk_tokens = None, []
            if chunk_length > clip_length:  # the per-frame stages of G * Tk frames, video-major
                out = None if video_mask_features is None else video_mask_features[chunk_start : chunk_start + chunk_frames]
                chunk_stages = self.forward_frames(chunk.flatten(0, 1), output_hidden_states, mask_features_out=out)
                chunk_tokens = self._encode_whole_clips(chunk_stages.frame_queries[-1], group, clip_length)
            for start in range(0, chunk_frames, clip_length):
                clip_stages = None
                if chunk_stages is not None:  # this clip's G * Tc frames
                    # A slice of the flat frame dim for one video: a view through unflatten would carry an odd
                    # batch stride, on which the pixel decoder's oneDNN convolutions ran ~20% slower.
                    end = min(start + clip_length, chunk_frames)
                    rows = slice(start, end) if group == 1 else [
                        g * chunk_frames + t for g in range(group) for t in range(start, end)
                    ]  # fmt: skip
                    clip_stages = chunk_stages.select(rows)
                clip_index = start // clip_length
                clip = self.forward_clip(
                    chunk[:, start : start + clip_length], memory, output_hidden_states, output_loss_inputs,
                    clip_stages, chunk_tokens[clip_index] if clip_index < len(chunk_tokens) else None,
                )  # fmt: skip
                memory = clip.object_output.memory
                outputs.append(clip)
        return outputs, memory

    def _encode_whole_clips(self, frame_queries: torch.Tensor, group: int, clip_length: int) -> list[torch.Tensor]:
        """The object encoder's frame tokens of a chunk's whole clips, encoded in one batch (the encoder is
        independent per clip; on CPUs one call on 4 clips of 100 queries costs 5.8 ms a clip instead of 8.0).

        frame_queries: the chunk's last-head frame queries, `[G * Tk, fQ, C]`, video-major. Returns one
        `[G, Tc * fQ, C]` tensor per whole clip, in order (a shorter last clip is left to `forward_clip`)."""
        per_video = frame_queries.unflatten(0, (group, -1))  # [G, Tk, fQ, C]
        whole = per_video.shape[1] // clip_length
        if whole == 0:
            return []
        clips = per_video[:, : whole * clip_length].unflatten(1, (whole, clip_length))  # [G, n, Tc, fQ, C]
        tokens = self.object_decoder.encode_clips(clips.transpose(0, 1).flatten(0, 1))  # [n * G, Tc * fQ, C]
        return list(tokens.unflatten(0, (whole, group)))

    def inference_chunk_length(self, clip_length: int) -> int:
        """Frames per call of the per-frame stages at inference: the fewest whole clips that make at least
        `frames_per_call` frames (online 4 clips of 1, semi-online 2 clips of 3). Those stages are independent
        per frame, and on CPUs the backbone's convolutions and the frame decoder's products run faster per frame
        on a few frames than on one. A caller that feeds a video in pieces (`genvis_hf.inference`) cuts it at
        multiples of this length, so that its results equal one call on the whole video bit for bit."""
        return clip_length * max(1, math.ceil(self.frames_per_call / clip_length))

    # ------------------------------------------------------------------ batch of videos
    def _video_extents(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None):
        """Per video: (length, height, width) of the real content, from `pixel_mask` `[B, T, H, W]`."""
        batch, num_frames, _, height, width = pixel_values.shape
        if pixel_mask is None:
            return [(num_frames, height, width)] * batch
        if pixel_mask.shape != (batch, num_frames, height, width):
            raise ValueError(
                f"pixel_mask has shape {tuple(pixel_mask.shape)}, expected {(batch, num_frames, height, width)} "
                "([batch, frames, height, width], matching pixel_values)"
            )
        extents = []
        valid = pixel_mask.bool()
        for b in range(batch):
            frames_valid = valid[b].flatten(1).any(1)
            length = int(frames_valid.sum())
            if length == 0:
                raise ValueError(f"video {b} of the batch has no valid frame in pixel_mask")
            if not bool(frames_valid[:length].all()):
                raise ValueError(f"video {b}: pixel_mask marks a padding frame before a valid one")
            rows = valid[b, :length].any(0).any(1)
            cols = valid[b, :length].any(0).any(0)
            extents.append((length, int(rows.nonzero().max()) + 1, int(cols.nonzero().max()) + 1))
        return extents

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        clip_memory: ClipMemory | None = None,
        clip_length: int | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> GenVISModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `[B, T, 3, H, W]`):
                Normalised frames (see `GenVISVideoProcessor`); a single video may be given as `[T, 3, H, W]`.
                Sizes that are not multiples of `config.size_divisibility` are zero-padded here.
            pixel_mask (`torch.LongTensor` of shape `[B, T, H, W]`, *optional*):
                1 on real pixels of real frames, 0 on padding (different sizes or lengths in one batch).
            clip_memory (`ClipMemory`, *optional*):
                `outputs.clip_memory` of a previous call on the preceding frames of the same video(s).
            clip_length (`int`, *optional*): frames per clip, overriding `config.clip_length` (1 = online,
                3 = semi-online; released models were trained with their config's value).
            output_hidden_states (`bool`, *optional*): also return backbone and pixel-decoder features.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs, _ = self._forward_groups(pixel_values, pixel_mask, clip_memory, output_hidden_states,
                                          clip_length=clip_length)  # fmt: skip
        return outputs if return_dict else outputs.to_tuple()

    def _forward_groups(self, pixel_values, pixel_mask, clip_memory, output_hidden_states: bool,
                        output_loss_inputs: bool = False, clip_length: int | None = None):  # fmt: skip
        """The batch forward: `(GenVISModelOutput, loss_inputs)`; `loss_inputs` (with `output_loss_inputs`) is one
        `(member video indices, per-clip ClipOutputs, (length, padded height, padded width))` per group."""
        check_pixel_inputs(pixel_values, pixel_mask)  # empty batch, NaN pixels, padded batch without a mask
        if pixel_values.dim() == 4:
            pixel_values = pixel_values.unsqueeze(0)
            pixel_mask = pixel_mask.unsqueeze(0) if pixel_mask is not None else None
        if pixel_values.dim() != 5 or pixel_values.shape[2] != 3:
            raise ValueError(
                f"pixel_values must be [batch, frames, 3, height, width], got shape {tuple(pixel_values.shape)}"
            )
        divisor = self.config.size_divisibility
        extents = self._video_extents(pixel_values, pixel_mask)
        pixel_values = _pad_to(
            pixel_values, [math.ceil(s / divisor) * divisor for s in pixel_values.shape[-2:]]
        ).to(self.dtype)

        groups: dict[tuple[int, int, int], list[int]] = {}
        padded_sizes = []
        for b, (length, height, width) in enumerate(extents):
            if output_loss_inputs:
                # Training pads every video to the batch's size, as the original (one group per video length, so
                # every process of a distributed run makes the same loss calls).
                key = (length, pixel_values.shape[-2], pixel_values.shape[-1])
            else:
                key = (length, math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor)
            groups.setdefault(key, []).append(b)
            padded_sizes.append(list(key[1:]))
        if clip_memory is not None and len(groups) > 1:
            raise ValueError("clip_memory can only continue a batch whose videos share length and padded size")

        if output_loss_inputs and clip_memory is not None:
            raise ValueError("clip_memory cannot be continued in a training (loss) forward")
        per_video: list[dict[str, torch.Tensor]] = [{} for _ in extents]
        final_memory = None
        loss_inputs = []
        for key, members in groups.items():
            length, padded_h, padded_w = key
            clips, final_memory = self.forward_video_group(
                pixel_values[members, :length, :, :padded_h, :padded_w], clip_memory, output_hidden_states,
                output_loss_inputs, clip_length,
            )  # fmt: skip
            self._scatter_group(clips, members, per_video)
            if output_loss_inputs:
                loss_inputs.append((members, clips, key))
                final_memory = None  # it holds L * G training sequences, not the videos' inference state

        def batch_of(key: str) -> torch.Tensor:
            return _stack_padded([video[key] for video in per_video])

        outputs = GenVISModelOutput(
            class_queries_logits=batch_of("class_logits"),
            mask_embeddings=batch_of("mask_embeddings"),
            mask_features=batch_of("mask_features"),
            clip_queries_hidden_states=batch_of("hidden_states"),
            propagated_queries=batch_of("propagated_queries"),
            memory_keys=batch_of("memory_keys"),
            memory_values=batch_of("memory_values"),
            frame_queries=batch_of("frame_queries"),
            video_lengths=torch.tensor([e[0] for e in extents], device=pixel_values.device),
            num_clips=torch.tensor([per_video[b]["class_logits"].shape[0] for b in range(len(extents))],
                                   device=pixel_values.device),  # fmt: skip
            clip_lengths=_stack_padded([video["clip_lengths"] for video in per_video]),
            image_sizes=torch.tensor([e[1:] for e in extents], device=pixel_values.device),
            padded_image_sizes=torch.tensor(padded_sizes, device=pixel_values.device),
            clip_memory=final_memory,
            backbone_hidden_states=(
                tuple(batch_of(f"backbone_{i}") for i in range(4)) if output_hidden_states else None
            ),
            pixel_decoder_hidden_states=(
                tuple(batch_of(f"pixel_decoder_{i}") for i in range(5)) if output_hidden_states else None
            ),
        )
        return outputs, loss_inputs

    @staticmethod
    def _scatter_group(clips: list[ClipOutput], members: list[int], per_video: list[dict]) -> None:
        """Split a group's per-clip outputs into per-video tensors (clips or frames along dim 0). In a training
        forward the object decoder ran L * G sequences; the videos' outputs are those of the last frame-decoder
        layer (sequences (L - 1) * G + g), i.e. what inference computes."""
        offset = clips[0].object_output.class_logits.shape[1] - len(members)

        def last_layer(clip: ClipOutput, name: str) -> torch.Tensor:
            return getattr(clip.object_output, name)[-1]  # [LG, cQ, X]

        for g, b in enumerate(members):
            video = per_video[b]
            s = offset + g
            video["class_logits"] = torch.stack([last_layer(c, "class_logits")[s] for c in clips])
            video["mask_embeddings"] = torch.stack([last_layer(c, "mask_embeddings")[s] for c in clips])
            video["hidden_states"] = torch.stack([last_layer(c, "hidden_states")[s] for c in clips])
            video["propagated_queries"] = torch.stack([c.object_output.memory.queries[s] for c in clips])
            video["memory_keys"] = torch.stack([c.object_output.memory.keys[-1][s] for c in clips])
            video["memory_values"] = torch.stack([c.object_output.memory.values[-1][s] for c in clips])
            video["mask_features"] = concatenate_frames([c.mask_features[g] for c in clips])
            video["frame_queries"] = torch.cat([c.frame_queries[g] for c in clips])
            video["clip_lengths"] = torch.tensor([c.frame_queries.shape[1] for c in clips], device=clips[0].mask_features.device)
            if clips[0].backbone_features is not None:
                for i in range(4):
                    video[f"backbone_{i}"] = torch.cat([c.backbone_features[i][g] for c in clips])
                for i in range(5):
                    video[f"pixel_decoder_{i}"] = torch.cat([c.pixel_decoder_features[i][g] for c in clips])


class GenVISForVideoInstanceSegmentation(GenVISPreTrainedModel):
    """[`GenVISModel`] for video instance segmentation: its outputs feed
    `GenVISVideoProcessor.post_process_video_instance_segmentation` (scores, labels, masks per video); given
    `labels`, it also returns the training `loss` and its weighted terms `loss_dict`.

    With `config.freeze_detector` (the original GenVIS training stage) only the object decoder
    (`model.object_decoder`) has `requires_grad`, and the frame-level losses are not computed.
    """

    def __init__(self, config: GenVISConfig):
        super().__init__(config)
        self.model = GenVISModel(config)
        self.post_init()
        self.apply_freeze_detector()

    def apply_freeze_detector(self, freeze: bool | None = None) -> None:
        """Set `requires_grad` for `config.freeze_detector` (or `freeze`, which also updates the config): frozen =
        only the object decoder trains; not frozen = every parameter trains."""
        if freeze is not None:
            self.config.freeze_detector = bool(freeze)
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_(not self.config.freeze_detector or name.startswith("object_decoder."))

    def set_deformable_attention_backend(self, backend: str) -> None:
        self.model.set_deformable_attention_backend(backend)

    @property
    def deformable_attention_backend_in_use(self) -> str:
        return self.model.deformable_attention_backend_in_use

    def compile_for_inference(self, **compile_kwargs) -> None:
        """See [`GenVISModel.compile_for_inference`]."""
        self.model.compile_for_inference(**compile_kwargs)

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        labels: list[dict[str, torch.Tensor]] | None = None,
        clip_memory: ClipMemory | None = None,
        clip_length: int | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> GenVISVideoInstanceSegmentationOutput | tuple:
        r"""See [`GenVISModel.forward`].

        labels (`list[dict]`, *optional*): one dict per video with `class_labels` (`torch.LongTensor` `[N]`,
            0-based) and `masks` (`torch.BoolTensor` `[N, T, H, W]`, T = the video's frames, H x W = the unpadded
            or padded input size); other keys (e.g. `instance_ids`, `video_id`) are ignored. An instance whose
            masks are empty on every frame is ignored; on a frame where its mask is empty it is absent. With
            labels, `loss` (the sum of `loss_dict`, the weighted terms of `GenVISLoss`) is returned.
        """
        if labels is None:
            return self.model(
                pixel_values,
                pixel_mask=pixel_mask,
                clip_memory=clip_memory,
                clip_length=clip_length,
                output_hidden_states=output_hidden_states,
                return_dict=return_dict,
            )
        from .loss import GenVISLoss, prepare_targets

        return_dict = return_dict if return_dict is not None else self.config.return_dict
        batch = pixel_values.shape[0] if pixel_values.dim() == 5 else 1
        if len(labels) != batch:
            raise ValueError(f"labels has {len(labels)} entries for a batch of {batch} videos")
        outputs, loss_inputs = self.model._forward_groups(
            pixel_values, pixel_mask, clip_memory, bool(output_hidden_states), output_loss_inputs=True,
            clip_length=clip_length,
        )
        # One loss call per group of equal-length videos. The mask-loss normalisers are averaged over processes
        # in training, where every batch holds clips of `train_num_frames` frames (one group: every process makes
        # the same calls); not in evaluation, where videos of different lengths make different numbers of groups.
        criterion = GenVISLoss(self.config, reduce_across_processes=self.training)
        loss_dict: dict[str, torch.Tensor] = {}
        for members, clips, (length, padded_h, padded_w) in loss_inputs:
            device = clips[0].mask_features.device
            targets = prepare_targets([labels[b] for b in members], length, (padded_h, padded_w), device)
            share = len(members) / batch  # groups (videos of different sizes) count by their share of videos
            for name, value in criterion(clips, targets).items():
                loss_dict[name] = loss_dict.get(name, 0.0) + value * share
        outputs = GenVISModelOutput(loss=sum(loss_dict.values()), **dict(outputs.items()), loss_dict=loss_dict)
        return outputs if return_dict else outputs.to_tuple()

    def segment_video(self, video, processor=None, **kwargs):
        """Segment one video (file, frames directory, array or frame list) clip by clip in bounded memory.

        Returns a `genvis_hf.inference.VideoSegmentation`; see `genvis_hf.inference.segment_video` for the
        options (`target_size`, `threshold`, `top_k`, `clip_length`, `max_frames`, `progress`, ...).
        """
        from ..inference import segment_video  # noqa: PLC0415  (inference composes model and processing)
        from ..processing.video_processing_genvis import GenVISVideoProcessor  # noqa: PLC0415

        processor = processor or GenVISVideoProcessor.from_model_config(self.config)
        return segment_video(self, processor, video, **kwargs)
