"""The frame decoder (Mask2Former's masked-attention decoder) at inference.

- Attention masks from mask features already resized to each level's size (`forward_inference`'s
  `level_mask_features`): bilinear resizing is linear per channel and commutes with the per-pixel product
  `embedding . features`, so the masks are the reference's (which computes stride-4 masks and resizes them) at a
  fraction of the cost.
- Every layer's key and value projections of its level's memory computed per level in one product for all the
  layers reading that level (the memory does not change between layers).
- The masked cross-attention by `FastGenVISAttention.attend` (the `masked_attention` operator on CPUs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..modeling.frame_decoder import FrameDecoderOutput, GenVISFrameDecoder, attend_where_not_blocked
from ..modeling.layers import CrossAttentionLayer, sine_position_embedding
from .derived import DerivedTensorCache
from .layers import FastGenVISAttention, fast_linear
from .registry import FastModule, fast_variant_of


def _with_position(x: torch.Tensor, position: torch.Tensor | None) -> torch.Tensor:
    return x if position is None else x + position


@fast_variant_of(GenVISFrameDecoder)
class FastFrameDecoder(FastModule, GenVISFrameDecoder):
    """`forward` runs `forward_inference` when no prediction logits are asked for and autograd is off."""

    _FAST_ATTRIBUTES = ("_projection_weights",)

    def _setup_fast(self) -> None:
        self._projection_weights = [DerivedTensorCache() for _ in range(self.num_levels)]

    def forward(self, multi_scale_features, mask_features, output_all_heads=False, output_predictions=False):
        if output_predictions or torch.is_grad_enabled() or not self._fast_layers():
            return super().forward(multi_scale_features, mask_features, output_all_heads, output_predictions)
        sizes = [tuple(x.shape[-2:]) for x in multi_scale_features]
        level_masks = [F.interpolate(mask_features, size=s, mode="bilinear", align_corners=False) for s in sizes]
        return self.forward_inference(multi_scale_features, level_masks, output_all_heads)

    def _fast_layers(self) -> bool:
        return all(isinstance(layer.cross_attn.attention, FastGenVISAttention) for layer in self.layers)

    def _level_projection(self, level: int, readers: list[int]) -> tuple[torch.Tensor, ...]:
        """(key weight, key bias, value weight, value bias) of the layers `readers`, concatenated along outputs."""
        attentions = [self.layers[i].cross_attn.attention for i in readers]

        def concatenate():
            key_weight, key_bias = (torch.cat(parts) for parts in zip(*(a.projection(1) for a in attentions)))
            value_weight, value_bias = (torch.cat(parts) for parts in zip(*(a.projection(2) for a in attentions)))
            return key_weight, key_bias, value_weight, value_bias

        sources = tuple(p for a in attentions for p in (a.in_proj_weight, a.in_proj_bias))
        return self._projection_weights[level].get(sources, concatenate)

    def _project_memories(self, memories: list[torch.Tensor], memory_positions: list[torch.Tensor]):
        """Every layer's key and value projections of its level's memory, `[N, HW, C]` each."""
        channels = self.hidden_dim
        keys: list[torch.Tensor | None] = [None] * len(self.layers)
        values: list[torch.Tensor | None] = [None] * len(self.layers)
        for level in range(self.num_levels):
            readers = list(range(level, len(self.layers), self.num_levels))
            if not readers:
                continue
            key_weight, key_bias, value_weight, value_bias = self._level_projection(level, readers)
            all_keys = fast_linear(memories[level] + memory_positions[level], key_weight, key_bias).split(channels, -1)
            all_values = fast_linear(memories[level], value_weight, value_bias).split(channels, -1)
            for i, key, value in zip(readers, all_keys, all_values):
                keys[i], values[i] = key, value
        return keys, values

    @staticmethod
    def _cross_attend(layer: CrossAttentionLayer, hidden_states, attention_mask, query_position, key, value):
        """`CrossAttentionLayer.forward` with the memory's key and value projections given."""
        query = layer.norm(hidden_states) if layer.pre_norm else hidden_states
        attended = layer.attention.attend(_with_position(query, query_position), key, value, attention_mask)
        hidden_states = hidden_states + layer.dropout(attended)
        return hidden_states if layer.pre_norm else layer.norm(hidden_states)

    def forward_inference(self, multi_scale_features: list[torch.Tensor], level_mask_features: list[torch.Tensor],
                          output_all_heads: bool = False) -> FrameDecoderOutput:  # fmt: skip
        """The decoder without prediction logits, from the mask features at each level's size
        (`[N, mask_dim, H_l, W_l]`, e.g. `pixel_decoder.level_mask_features`)."""
        memories, memory_positions = [], []
        for level, (x, projection) in enumerate(zip(multi_scale_features, self.input_projections)):
            position = sine_position_embedding(
                x.shape[0], x.shape[2], x.shape[3], self.hidden_dim // 2, x.device, x.dtype
            )
            memory_positions.append(position.flatten(2).transpose(1, 2))  # [N, HW, C]
            memory = projection(x).permute(0, 2, 3, 1).flatten(1, 2)  # [N, HW, C]
            memories.append(memory + self.level_embed.weight[level])
        keys, values = self._project_memories(memories, memory_positions)

        batch = multi_scale_features[0].shape[0]
        query_position = self.query_position_embeddings.weight.unsqueeze(0).expand(batch, -1, -1)  # [N, fQ, C]
        queries = self.query_features.weight.unsqueeze(0).expand(batch, -1, -1)
        num_layers = len(self.layers)
        kept = []
        attention_mask = None
        for head in range(num_layers + 1):
            if head > 0:
                layer = self.layers[head - 1]
                queries = self._cross_attend(layer.cross_attn, queries, attention_mask, query_position,
                                             keys[head - 1], values[head - 1])  # fmt: skip
                queries = layer.ffn(layer.self_attn(queries, query_position))
            normed = self.decoder_norm(queries)
            if output_all_heads or head == num_layers:
                kept.append(normed)
            if head < num_layers:
                mask_embeddings = self.mask_embedder(normed)  # [N, fQ, D]
                level_features = level_mask_features[head % self.num_levels]  # [N, D, h, w]
                logits = torch.einsum("bqc,bchw->bqhw", mask_embeddings, level_features)
                attention_mask = attend_where_not_blocked(logits.sigmoid().flatten(2) < 0.5).unsqueeze(1)
        return FrameDecoderOutput(frame_queries=torch.stack(kept))
