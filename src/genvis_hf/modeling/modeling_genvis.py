"""GenVIS for video instance segmentation: the composition root.

    pixel_values [B, T, 3, H, W]
      └─ per clip of W frames (the last one may be shorter, never padded):
           backbone ─► pixel decoder ─► frame decoder ─► frame queries [Tc, fQ, C]
                                      └► stride-4 map ─► object decoder's mask projection ─► mask features
           object decoder(frame queries, ClipMemory) ─► clip-query logits / mask embeddings, ClipMemory'

Videos of one batch are processed in groups of identical (length, padded size) (`batching.py`): the original has
no padding mask, so a video padded up to a larger one would give different results; grouping makes each video's
output equal to running it alone.

This module and the modules it composes are the reference: pure PyTorch, the same computation in training and
inference. genvis_hf's CPU inference fast path (`genvis_hf/optimization/`) swaps faster modules in at `eval()`
through the one hook of `GenVISPreTrainedModel.train`; see docs/architecture.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..configuration.configuration_genvis import GenVISConfig
from .backbone_resnet import ConvFrozenBN
from .backbone_swin import SwinMlp, SwinPatchMerging, SwinWindowAttention, relative_position_index
from .backbones import build_backbone
from .batching import concatenate_frames, group_videos, pad_to, round_up, stack_padded, video_extents
from .deformable_attention import MultiScaleDeformableAttention, resolve_backend
from .frame_decoder import GenVISFrameDecoder
from .input_checks import check_pixel_inputs
from .layers import FrozenBatchNorm2d, GenVISAttention
from .object_decoder import ClipMemory, GenVISObjectDecoder, ObjectDecoderOutput
from .pixel_decoder import GenVISPixelDecoder


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

    @staticmethod
    def from_stages(stages: FrameStagesOutput, object_output: ObjectDecoderOutput, group: int) -> ClipOutput:
        """The clip's outputs from its G * Tc frames' stage outputs (video-major) and the object decoder's."""

        def per_video(x: torch.Tensor) -> torch.Tensor:  # [G * Tc, ...] -> [G, Tc, ...]
            return x.unflatten(0, (group, -1))

        def all_per_video(tensors: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
            return None if tensors is None else [per_video(x) for x in tensors]

        return ClipOutput(
            object_output=object_output,
            mask_features=per_video(stages.mask_features),
            frame_queries=per_video(stages.frame_queries[-1]),
            backbone_features=all_per_video(stages.backbone_features),
            pixel_decoder_features=all_per_video(stages.pixel_decoder_features),
            frame_class_logits=all_per_video(stages.class_logits),
            frame_mask_logits=all_per_video(stages.mask_logits),
        )


@dataclass
class GroupLossInputs:
    """What the training loss needs of one group of videos run together (see `GenVISModel.run_video_groups`)."""

    members: list[int]  # indices of the group's videos in the batch
    clips: list[ClipOutput]  # per clip, L * G sequences in the object decoder (l * G + g)
    size: tuple[int, int, int]  # (length, padded height, padded width)


def reject_unknown_arguments(method: str, kwargs: dict) -> None:
    """A `TypeError` naming every keyword argument `method` does not take (none are silently ignored)."""
    if kwargs:
        hint = "; GenVIS returns no attention weights" if "output_attentions" in kwargs else ""
        raise TypeError(f"{method}() got unexpected keyword argument(s) {', '.join(map(repr, kwargs))}{hint}")


class InferenceFastPath(Protocol):
    """What genvis_hf's fast-path layer provides (`genvis_hf.optimization`); see `GenVISPreTrainedModel`."""

    def on_mode_change(self, model: nn.Module, training: bool) -> None: ...
    def optimize(self, model: nn.Module) -> None: ...
    def restore(self, model: nn.Module) -> None: ...
    def compile(self, model: nn.Module, **compile_kwargs) -> None: ...
    def chunk_length(self, model: nn.Module, clip_length: int) -> int: ...


class GenVISPreTrainedModel(PreTrainedModel):
    config_class = GenVISConfig
    config: GenVISConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("video",)
    supports_gradient_checkpointing = True
    # `forward(**kwargs)` only exists to name unknown arguments (`reject_unknown_arguments`): `Trainer` must not
    # read it as accepting loss kwargs (`num_items_in_batch`).
    accepts_loss_kwargs = False
    _no_split_modules = ["GenVISFrameDecoder", "GenVISObjectDecoder", "GenVISPixelDecoder"]

    # The fast path for inference (faster modules swapped in at `eval()`, out again at `train()`): genvis_hf registers
    # it here when imported (`genvis_hf.optimization`); the model code exported for trust_remote_code has none and
    # always runs the reference modules.
    fast_path: ClassVar[InferenceFastPath | None] = None

    def train(self, mode: bool = True):
        super().train(mode)
        if GenVISPreTrainedModel.fast_path is not None:
            GenVISPreTrainedModel.fast_path.on_mode_change(self, training=mode)
        return self

    def optimize_for_inference(self):
        """Swap in the fast-path modules now (what `eval()` does when `genvis_hf.settings.optimize_on_eval`);
        returns the model. Parameters, buffers and state-dict keys stay the same objects."""
        self._require_fast_path().optimize(self)
        return self

    def restore_reference(self):
        """Put the reference modules back, and keep them through later `eval()` calls (e.g. inside a pipeline) until
        `optimize_for_inference()`; returns the model."""
        self._require_fast_path().restore(self)
        return self

    def _require_fast_path(self) -> InferenceFastPath:
        if GenVISPreTrainedModel.fast_path is None:
            raise RuntimeError("this copy of the GenVIS code has no fast path (install genvis_hf and import it)")
        return GenVISPreTrainedModel.fast_path

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


class GenVISModel(GenVISPreTrainedModel):
    """GenVIS: backbone, pixel decoder, frame decoder and object decoder with clip memory, run clip by clip.

    Its outputs are everything inference needs (clip-query logits, mask embeddings, mask features), so
    `GenVISVideoProcessor.post_process_video_instance_segmentation` works on them directly.
    """

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
        """Opt-in `torch.compile` of the per-frame stages (backbone, pixel decoder, frame decoder) and of the object
        decoder's transformer (`decode_queries`); the clip loop stays in Python. With genvis_hf's fast path, each
        stage compiles as one graph (`fullgraph=True` works: its operators are registered with fake
        implementations) and the memory read's growing length is a dynamic dimension; see
        `genvis_hf.optimization.compile`. Without it, each stage module is compiled as it is."""
        if GenVISPreTrainedModel.fast_path is not None:
            GenVISPreTrainedModel.fast_path.compile(self, **compile_kwargs)
            return
        for module in (self.backbone, self.pixel_decoder, self.frame_decoder):
            module.compile(**compile_kwargs)

    # ------------------------------------------------------------------ the stages
    def forward_frames(self, images: torch.Tensor, output_hidden_states: bool = False,
                       output_loss_inputs: bool = False) -> FrameStagesOutput:  # fmt: skip
        """The per-frame stages on a batch of frames `[N, 3, H, W]`: backbone -> pixel decoder -> frame decoder,
        and the object decoder's mask projection of the stride-4 map. Every frame is independent of the others."""
        backbone_features = self.backbone(images)  # 4 x [N, C_i, H_i, W_i]
        pixels = self.pixel_decoder(backbone_features)
        frame_output = self.frame_decoder(
            pixels.multi_scale_features, pixels.mask_features,
            output_all_heads=output_loss_inputs, output_predictions=output_loss_inputs,
        )  # fmt: skip
        return FrameStagesOutput(
            frame_queries=frame_output.frame_queries,  # [heads kept, N, fQ, C]
            mask_features=self.object_decoder.project_mask_features(pixels.stride4_features),  # [N, D, H/4, W/4]
            backbone_features=backbone_features if output_hidden_states else None,
            pixel_decoder_features=(
                [*pixels.multi_scale_features, pixels.stride4_features, pixels.mask_features]
                if output_hidden_states
                else None
            ),
            class_logits=frame_output.class_logits,
            mask_logits=frame_output.mask_logits,
        )

    def forward_clip(self, frames: torch.Tensor, memory: ClipMemory, output_hidden_states: bool = False,
                     output_loss_inputs: bool = False) -> ClipOutput:  # fmt: skip
        """Run one clip of a group of G videos of identical size.

        Args:
            frames: `[G, Tc, 3, H, W]`, normalised, H and W multiples of `size_divisibility`.
            memory: the group's `ClipMemory` from the previous clip (empty for the first clip); with
                `output_loss_inputs` it holds L * G sequences.
            output_loss_inputs: training: keep every frame-decoder head's class and mask logits, and feed the
                object decoder the queries of the last L = `config.frame_queries_last_layers` heads as L * G
                sequences (index l * G + g), as the original trains it.
        """
        group, clip_frames = frames.shape[:2]
        stages = self.forward_frames(frames.flatten(0, 1), output_hidden_states, output_loss_inputs)
        heads = (
            stages.frame_queries[-self.config.frame_queries_last_layers :]
            if output_loss_inputs
            else stages.frame_queries[-1:]
        )
        # [L, G*Tc, fQ, C] -> [L*G, Tc, fQ, C]
        sequences = heads.unflatten(1, (group, clip_frames)).flatten(0, 1)
        return ClipOutput.from_stages(stages, self.object_decoder(sequences, memory), group)

    def forward_video_group(self, pixel_values: torch.Tensor, clip_memory: ClipMemory | None = None,
                            output_hidden_states: bool = False,
                            output_loss_inputs: bool = False,
                            clip_length: int | None = None) -> tuple[list[ClipOutput], ClipMemory]:  # fmt: skip
        """The clip loop: G videos of identical length and size, `[G, T, 3, H, W]`, clip by clip -> per-clip outputs
        and the memory after the last clip.

        Clip i holds frames `[i * W, (i + 1) * W)`; the last clip may be shorter. `clip_memory` continues a
        previous call on earlier frames of the same videos (then T should be a multiple of the clip length,
        except for the video's final call). `output_loss_inputs` runs the training variant (see `forward_clip`):
        the memory then carries L * G sequences, one per (frame-decoder layer, video). `clip_length` overrides
        `config.clip_length`."""
        memory = clip_memory if clip_memory is not None else ClipMemory()
        clip_length = clip_length or self.config.clip_length
        outputs = []
        for start in range(0, pixel_values.shape[1], clip_length):
            clip = self.forward_clip(pixel_values[:, start : start + clip_length], memory, output_hidden_states,
                                     output_loss_inputs)  # fmt: skip
            memory = clip.object_output.memory
            outputs.append(clip)
        return outputs, memory

    # ------------------------------------------------------------------ batch of videos
    def run_video_groups(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None,
                         clip_memory: ClipMemory | None = None, output_hidden_states: bool = False,
                         output_loss_inputs: bool = False,
                         clip_length: int | None = None) -> tuple[GenVISModelOutput, list[GroupLossInputs]]:  # fmt: skip
        """The batch forward behind `forward` (see there for the arguments): the videos grouped by (length, padded
        size), each group through `forward_video_group`, the outputs padded back into one batch. With
        `output_loss_inputs` (the training forward of `GenVISForVideoInstanceSegmentation`) it also returns, per
        group, what the loss needs."""
        check_pixel_inputs(pixel_values, pixel_mask)  # empty batch, NaN pixels, padded batch without a mask
        if pixel_values.dim() == 4:
            pixel_values = pixel_values.unsqueeze(0)
            pixel_mask = pixel_mask.unsqueeze(0) if pixel_mask is not None else None
        if pixel_values.dim() != 5 or pixel_values.shape[2] != 3:
            raise ValueError(
                f"pixel_values must be [batch, frames, 3, height, width], got shape {tuple(pixel_values.shape)}"
            )
        if clip_memory is not None and output_loss_inputs:
            raise ValueError("clip_memory cannot be continued in a training (loss) forward")
        divisor = self.config.size_divisibility
        extents = video_extents(pixel_values, pixel_mask)
        pixel_values = pad_to(pixel_values, [round_up(s, divisor) for s in pixel_values.shape[-2:]]).to(self.dtype)
        groups = group_videos(extents, divisor, tuple(pixel_values.shape[-2:]) if output_loss_inputs else None)
        if clip_memory is not None and len(groups) > 1:
            raise ValueError("clip_memory can only continue a batch whose videos share length and padded size")

        per_video: list[dict[str, torch.Tensor]] = [{} for _ in extents]
        padded_sizes: list[list[int]] = [[]] * len(extents)
        final_memory = None
        loss_inputs = []
        for key, members in groups.items():
            length, padded_h, padded_w = key
            clips, final_memory = self.forward_video_group(
                pixel_values[members, :length, :, :padded_h, :padded_w], clip_memory, output_hidden_states,
                output_loss_inputs, clip_length,
            )  # fmt: skip
            _scatter_group(clips, members, per_video)
            for b in members:
                padded_sizes[b] = [padded_h, padded_w]
            if output_loss_inputs:
                loss_inputs.append(GroupLossInputs(members, clips, key))
                final_memory = None  # it holds L * G training sequences, not the videos' inference state

        def batch_of(key: str) -> torch.Tensor:
            return stack_padded([video[key] for video in per_video])

        device = pixel_values.device
        outputs = GenVISModelOutput(
            class_queries_logits=batch_of("class_logits"),
            mask_embeddings=batch_of("mask_embeddings"),
            mask_features=batch_of("mask_features"),
            clip_queries_hidden_states=batch_of("hidden_states"),
            propagated_queries=batch_of("propagated_queries"),
            memory_keys=batch_of("memory_keys"),
            memory_values=batch_of("memory_values"),
            frame_queries=batch_of("frame_queries"),
            video_lengths=torch.tensor([e[0] for e in extents], device=device),
            num_clips=torch.tensor([video["class_logits"].shape[0] for video in per_video], device=device),
            clip_lengths=batch_of("clip_lengths"),
            image_sizes=torch.tensor([e[1:] for e in extents], device=device),
            padded_image_sizes=torch.tensor(padded_sizes, device=device),
            clip_memory=final_memory,
            backbone_hidden_states=(
                tuple(batch_of(f"backbone_{i}") for i in range(4)) if output_hidden_states else None
            ),
            pixel_decoder_hidden_states=(
                tuple(batch_of(f"pixel_decoder_{i}") for i in range(5)) if output_hidden_states else None
            ),
        )
        return outputs, loss_inputs

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
        reject_unknown_arguments("GenVISModel.forward", kwargs)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs, _ = self.run_video_groups(pixel_values, pixel_mask, clip_memory, output_hidden_states,
                                           clip_length=clip_length)  # fmt: skip
        return outputs if return_dict else outputs.to_tuple()


def _scatter_group(clips: list[ClipOutput], members: list[int], per_video: list[dict]) -> None:
    """Split a group's per-clip outputs into per-video tensors (clips or frames along dim 0). In a training forward
    the object decoder ran L * G sequences; the videos' outputs are those of the last frame-decoder layer
    (sequences (L - 1) * G + g), i.e. what inference computes."""
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
        video["clip_lengths"] = torch.tensor(
            [c.frame_queries.shape[1] for c in clips], device=clips[0].mask_features.device
        )
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
        reject_unknown_arguments("GenVISForVideoInstanceSegmentation.forward", kwargs)
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
        outputs, loss_inputs = self.model.run_video_groups(
            pixel_values,
            pixel_mask,
            clip_memory,
            bool(output_hidden_states),
            output_loss_inputs=True,
            clip_length=clip_length,
        )
        # One loss call per group of equal-length videos. The mask-loss normalisers are averaged over processes
        # in training, where every batch holds clips of `train_num_frames` frames (one group: every process makes
        # the same calls); not in evaluation, where videos of different lengths make different numbers of groups.
        criterion = GenVISLoss(self.config, reduce_across_processes=self.training)
        loss_dict: dict[str, torch.Tensor] = {}
        for group in loss_inputs:
            length, padded_h, padded_w = group.size
            device = group.clips[0].mask_features.device
            targets = prepare_targets([labels[b] for b in group.members], length, (padded_h, padded_w), device)
            share = len(group.members) / batch  # groups (videos of different sizes) count by their share of videos
            for name, value in criterion(group.clips, targets).items():
                loss_dict[name] = loss_dict.get(name, 0.0) + value * share
        outputs = GenVISModelOutput(loss=sum(loss_dict.values()), **dict(outputs.items()), loss_dict=loss_dict)
        return outputs if return_dict else outputs.to_tuple()

    def segment_video(self, video, processor=None, **kwargs):
        """Segment one video (file, frames directory, array or frame list) clip by clip in bounded memory.

        Returns a `genvis_hf.inference.VideoSegmentation`; see `genvis_hf.inference.segment_video` for the
        options (`target_size`, `threshold`, `top_k`, `clip_length`, `max_frames`, `progress`, ...).
        """
        from ..inference import segment_video
        from ..processing.video_processing_genvis import GenVISVideoProcessor

        processor = processor or GenVISVideoProcessor.from_model_config(self.config)
        return segment_video(self, processor, video, **kwargs)
