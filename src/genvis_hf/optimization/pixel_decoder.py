"""The pixel decoder's deformable encoder at CPU inference.

- `FusedMultiScaleDeformableAttention`: the offset and attention-logit projections as one product, and the core
  as `torch.ops.genvis.ms_deform_attn_from_projections`, which applies the softmax and turns offsets into
  sampling locations inside the kernel (two passes over `[N, Lq, h, L, P]` tensors saved); the caller's residual
  add becomes a post-op of the output projection.
- `FusedDeformableEncoderLayer`: both residual adds and the FFN's ReLU as post-ops of their products.

Both run where the model's backend resolves to `"jit"` on a CPU in float32 or bfloat16 (the sampling in float32) without
autograd; the reference computation elsewhere. Results differ from the reference by float rounding only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..modeling.deformable_attention import MultiScaleDeformableAttention, resolve_backend
from ..modeling.pixel_decoder import DeformableEncoderLayer, GenVISPixelDecoder
from ..ops.ms_deform_attn import ms_deform_attn_from_projections
from .conditions import compiled_ops_ready, cpu_inference
from .derived import DerivedTensorCache
from .layers import fast_linear
from .registry import FastModule, fast_variant_of


@fast_variant_of(MultiScaleDeformableAttention)
class FusedMultiScaleDeformableAttention(FastModule, MultiScaleDeformableAttention):
    """Deformable attention whose CPU float32 inference runs from the projections (see the module docstring);
    `forward(..., residual=)` adds the caller's residual (as a post-op where the fused path runs)."""

    _FAST_ATTRIBUTES = ("_offsets_and_logits",)

    def _setup_fast(self) -> None:
        self._offsets_and_logits = DerivedTensorCache()  # both projections as one [h*L*P*3, C] product

    def fused_path_applies(self, hidden_states: torch.Tensor, value_states: torch.Tensor) -> bool:
        return (
            cpu_inference(hidden_states, torch.float32, torch.bfloat16)
            and value_states.dtype == self.value_proj.weight.dtype == hidden_states.dtype
            and compiled_ops_ready()
            and resolve_backend(self.backend, value_states.device) == "jit"
        )

    def forward(self, hidden_states, reference_points, value_states, spatial_shapes, spatial_shapes_list,
                level_start_index, residual: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        if not self.fused_path_applies(hidden_states, value_states):
            out = super().forward(hidden_states, reference_points, value_states, spatial_shapes, spatial_shapes_list,
                                  level_start_index)  # fmt: skip
            return out if residual is None else residual + out
        batch, num_values, _ = value_states.shape
        value = fast_linear(value_states, self.value_proj.weight, self.value_proj.bias)
        value = value.view(batch, num_values, self.num_heads, self.embed_dim // self.num_heads)  # [N, S, h, d]
        weight, bias = self._offsets_and_logits.get(
            (self.sampling_offsets.weight, self.sampling_offsets.bias, self.attention_weights.weight,
             self.attention_weights.bias),
            lambda: (torch.cat([self.sampling_offsets.weight, self.attention_weights.weight]),
                     torch.cat([self.sampling_offsets.bias, self.attention_weights.bias])),
        )  # fmt: skip
        projections = fast_linear(hidden_states, weight, bias).float()  # [N, Lq, h*L*P*2 + h*L*P]
        num_offsets = self.sampling_offsets.out_features
        # The sampling runs in float32 whatever the model's dtype (as the reference: bf16 locations would be off by a
        # quarter pixel).
        output = ms_deform_attn_from_projections(
            value.float(), spatial_shapes, level_start_index, reference_points.float(), projections[..., :num_offsets],
            projections[..., num_offsets:], self.num_points,
        )  # fmt: skip  # [N, Lq, C]
        output = output.to(hidden_states.dtype)
        return fast_linear(output, self.output_proj.weight, self.output_proj.bias, residual=residual)


@fast_variant_of(DeformableEncoderLayer)
class FusedDeformableEncoderLayer(FastModule, DeformableEncoderLayer):
    """The encoder layer with its residual adds and ReLU as post-ops of the products at inference."""

    def forward(self, hidden_states, position_embeddings, reference_points, spatial_shapes, spatial_shapes_list,
                level_start_index):  # fmt: skip
        if (
            torch.is_grad_enabled()
            or (self.training and self.dropout.p > 0)
            or not isinstance(self.self_attn, FusedMultiScaleDeformableAttention)
        ):
            return super().forward(hidden_states, position_embeddings, reference_points, spatial_shapes,
                                   spatial_shapes_list, level_start_index)  # fmt: skip
        hidden_states = self.self_attn_layer_norm(
            self.self_attn(hidden_states + position_embeddings, reference_points, hidden_states, spatial_shapes,
                           spatial_shapes_list, level_start_index, residual=hidden_states)
        )  # fmt: skip
        ffn = fast_linear(hidden_states, self.fc1.weight, self.fc1.bias, activation="relu")
        return self.final_layer_norm(fast_linear(ffn, self.fc2.weight, self.fc2.bias, residual=hidden_states))


def level_mask_features(pixel_decoder: GenVISPixelDecoder, stride4_features: torch.Tensor,
                        sizes: list[tuple[int, int]]) -> list[torch.Tensor]:  # fmt: skip
    """The frame decoder's mask features resized bilinearly to each of `sizes` (`[N, mask_dim, h, w]` each),
    computed as the projection of the resized stride-4 map: bilinear weights sum to one, so resizing commutes with
    the 1x1 projection (bias included), and the projection then runs on a fraction of the pixels. What the frame
    decoder's attention masks need at inference (`frame_decoder.py`)."""
    projection = pixel_decoder.mask_projection
    return [
        projection(F.interpolate(stride4_features, size=size, mode="bilinear", align_corners=False)) for size in sizes
    ]
