"""VITA's object encoder/decoder with GenVIS's clip-to-clip query propagation and memory.

Per clip of `Tc` frames: the frame queries `[Tc * fQ]` of each video are projected and encoded by
self-attention (over the whole clip, or in shifted temporal windows when `window_size > 0`); the clip
queries (the previous clip's propagated queries, the learnable ones for the first clip) first read the
memory of past clips, then decode the encoded frame queries (cross-attention -> self-attention -> FFN).
The raw output of the last layer is propagated to the next clip; its normalised version feeds the heads
and is written to memory (key/value projections), so memory grows by one entry per clip.

Batch layout: the object decoder treats each (frame-decoder layer, video) pair as one sequence; at
inference there is one frame-decoder layer, so the batch is just the videos. All tensors batch-first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .layers import MLP, CrossAttentionLayer, FeedForwardLayer, SelfAttentionLayer


@dataclass
class ClipMemory:
    """What GenVIS carries from one clip to the next, for a batch of `LB` sequences.

    Attributes:
        queries: `[LB, cQ, C]` raw (un-normalised) last-layer output of the previous clip, or None before
            the first clip (the learnable query features are used then).
        keys / values: one `[LB, cQ, C]` tensor per past clip (the memory read is per query slot).
    """

    queries: torch.Tensor | None = None
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def stacked(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Keys and values as `[LB, M, cQ, C]` tensors (None, None when empty)."""
        if not self.keys:
            return None, None
        return torch.stack(self.keys, dim=1), torch.stack(self.values, dim=1)


@dataclass
class ObjectDecoderOutput:
    """Per-clip outputs for `LB` sequences.

    Attributes:
        hidden_states: `[D, LB, cQ, C]` normalised decoder outputs (D = every layer when deep supervision is
            on in training, else the last layer only).
        class_logits: `[D, LB, cQ, num_classes + 1]`.
        mask_embeddings: `[D, LB, cQ, mask_dim]`.
        clip_similarity_embeddings: `[D, LB, cQ, C]` or None (training-only similarity head).
        frame_similarity_embeddings: `[LB, Tc * fQ, C]` or None (training-only similarity head).
        memory: the updated `ClipMemory` (propagated queries + memory with this clip appended).
    """

    hidden_states: torch.Tensor
    class_logits: torch.Tensor
    mask_embeddings: torch.Tensor
    clip_similarity_embeddings: torch.Tensor | None
    frame_similarity_embeddings: torch.Tensor | None
    memory: ClipMemory


class ObjectEncoderLayer(GradientCheckpointingLayer):
    """Self-attention (no position encoding) -> FFN over the frame queries of a clip."""

    def __init__(self, hidden_dim: int, num_heads: int, ffn_dim: int, pre_norm: bool):
        super().__init__()
        self.self_attn = SelfAttentionLayer(hidden_dim, num_heads, pre_norm)
        self.ffn = FeedForwardLayer(hidden_dim, ffn_dim, pre_norm)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.ffn(self.self_attn(hidden_states, attention_mask=attention_mask))


class ObjectDecoderLayer(GradientCheckpointingLayer):
    """Cross-attention to the encoded frame queries -> self-attention -> FFN."""

    def __init__(self, hidden_dim: int, num_heads: int, ffn_dim: int, pre_norm: bool):
        super().__init__()
        self.cross_attn = CrossAttentionLayer(hidden_dim, num_heads, pre_norm)
        self.self_attn = SelfAttentionLayer(hidden_dim, num_heads, pre_norm)
        self.ffn = FeedForwardLayer(hidden_dim, ffn_dim, pre_norm)

    def forward(self, queries, frame_tokens, frame_token_position, query_position):
        queries = self.cross_attn(queries, frame_tokens, None, frame_token_position, query_position)
        queries = self.self_attn(queries, query_position)
        return self.ffn(queries)


class GenVISObjectDecoder(nn.Module):
    """
    Args:
        hidden_dim: C. mask_dim: mask embedding size. pixel_decoder_dim: channels of the stride-4 map that
        `mask_projection` turns into GenVIS mask features. num_frame_queries: fQ. num_queries: cQ.
        num_encoder_layers / num_decoder_layers / num_heads / ffn_dim / pre_norm: transformer shape.
        window_size: temporal window of the encoder (0 = whole clip). enforce_input_projection: Linear on the
        frame queries (else identity). num_classes: K. use_similarity_heads / similarity_use_clip: the
        training-only similarity embeddings. deep_supervision: in training, return every decoder layer.
    """

    def __init__(self, hidden_dim: int, mask_dim: int, pixel_decoder_dim: int, num_frame_queries: int,
                 num_queries: int, num_encoder_layers: int, num_decoder_layers: int, num_heads: int,
                 ffn_dim: int, num_classes: int, pre_norm: bool = False, window_size: int = 0,
                 enforce_input_projection: bool = True, use_similarity_heads: bool = True,
                 similarity_use_clip: bool = True, deep_supervision: bool = True):  # fmt: skip
        super().__init__()
        self.num_heads = num_heads
        self.num_queries = num_queries
        self.window_size = window_size
        self.deep_supervision = deep_supervision
        self.input_projection = nn.Linear(hidden_dim, hidden_dim) if enforce_input_projection else nn.Identity()
        self.encoder_layers = nn.ModuleList(
            ObjectEncoderLayer(hidden_dim, num_heads, ffn_dim, pre_norm) for _ in range(num_encoder_layers)
        )
        self.decoder_layers = nn.ModuleList(
            ObjectDecoderLayer(hidden_dim, num_heads, ffn_dim, pre_norm) for _ in range(num_decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_features = nn.Embedding(num_queries, hidden_dim)
        self.query_position_embeddings = nn.Embedding(num_queries, hidden_dim)
        self.frame_query_position_embeddings = nn.Embedding(num_frame_queries, hidden_dim)
        # GenVIS: memory written from each clip's output, and the query's read of it.
        self.memory_key_projection = nn.Linear(hidden_dim, hidden_dim)
        self.memory_value_projection = nn.Linear(hidden_dim, hidden_dim)
        self.query_key_projection = nn.Linear(hidden_dim, hidden_dim)
        self.query_value_projection = nn.Linear(hidden_dim, hidden_dim)
        # Heads.
        self.mask_projection = nn.Conv2d(pixel_decoder_dim, mask_dim, kernel_size=1)
        self.class_predictor = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embedder = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.frame_similarity_embedder = nn.Linear(hidden_dim, hidden_dim) if use_similarity_heads else None
        self.clip_similarity_embedder = (
            nn.Linear(hidden_dim, hidden_dim) if use_similarity_heads and similarity_use_clip else None
        )

    def project_mask_features(self, stride4_features: torch.Tensor) -> torch.Tensor:
        """GenVIS mask features: `mask_projection` (1x1) of the pixel decoder's stride-4 map, `[N, C, H/4, W/4]` ->
        `[N, mask_dim, H/4, W/4]`."""
        return self.mask_projection(stride4_features)

    # ------------------------------------------------------------------ frame-query encoder
    def encode_clips(self, frame_queries: torch.Tensor) -> torch.Tensor:
        """Input projection + encoder: `[LB, Tc, fQ, C]` frame queries -> `[LB, Tc * fQ, C]` frame tokens.
        Independent per sequence (several clips may be encoded in one batch)."""
        return self.encode_frame_queries(self.input_projection(frame_queries))

    def encode_frame_queries(self, frame_queries: torch.Tensor) -> torch.Tensor:
        """`[LB, Tc, fQ, C]` -> `[LB, Tc * fQ, C]`."""
        batch, num_frames, num_frame_queries, channels = frame_queries.shape
        if self.window_size == 0:
            tokens = frame_queries.reshape(batch, num_frames * num_frame_queries, channels)
            for layer in self.encoder_layers:
                tokens = layer(tokens)
            return tokens
        return self._encode_in_windows(frame_queries).reshape(batch, num_frames * num_frame_queries, channels)

    def _encode_in_windows(self, frame_queries: torch.Tensor) -> torch.Tensor:
        """VITA's temporal window attention: frames padded to a multiple of the window; even layers attend
        within windows, odd layers (at inference) within windows shifted by half a window."""
        batch, num_frames, fq, channels = frame_queries.shape
        w = self.window_size
        num_windows = math.ceil(num_frames / w)
        padded_frames = num_windows * w
        x = F.pad(frame_queries, (0, 0, 0, 0, 0, padded_frames - num_frames))  # [LB, Tp, fQ, C]
        padded = torch.zeros(batch, padded_frames, dtype=torch.bool, device=x.device)
        padded[:, num_frames:] = True

        # Plain windows: padded frames are masked out as keys.
        key_is_padding = (
            padded.view(batch * num_windows, w, 1).expand(-1, -1, fq).reshape(batch * num_windows, 1, 1, w * fq)
        )
        window_mask = torch.zeros(key_is_padding.shape, dtype=x.dtype, device=x.device)
        window_mask = window_mask.masked_fill(key_is_padding, float("-inf"))

        # Shifted windows: frames of a window that did not neighbour each other before the roll are kept
        # apart with an additive -1000 (the original's value), per (window, query frame, key frame).
        half = math.ceil(w / 2)
        rolled = torch.roll(padded, half, 1).view(batch, num_windows, w, 1).expand(-1, -1, -1, w).clone()
        rolled[:, 0] = rolled[:, 0] | rolled[:, 0].transpose(-2, -1)
        rolled[:, -1] = rolled[:, -1] | rolled[:, -1].transpose(-2, -1)
        rolled[:, 0, :half, half:] = True
        rolled[:, 0, half:, :half] = True
        shift_mask = rolled.view(batch * num_windows, 1, w, 1, w, 1).expand(-1, -1, -1, fq, -1, fq)
        shift_mask = shift_mask.reshape(batch * num_windows, 1, w * fq, w * fq).to(x.dtype) * -1000.0

        for index, layer in enumerate(self.encoder_layers):
            shifted = not self.training and index % 2 == 1
            if shifted:
                x = torch.roll(x, half, 1)
            tokens = x.view(batch * num_windows, w * fq, channels)  # windows as sequences
            tokens = layer(tokens, attention_mask=shift_mask if shifted else window_mask)
            x = tokens.view(batch, padded_frames, fq, channels)
            if shifted:
                x = torch.roll(x, -half, 1)
        return x[:, :num_frames]

    # ------------------------------------------------------------------ memory read
    def read_memory(self, queries: torch.Tensor, memory_keys: torch.Tensor | None,
                    memory_values: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        """GenVIS query update: `q + V(q) + sum_m softmax_m(<K(q)_i, key_m,i>) value_m,i` (per query slot i,
        no scaling; the read is zero without memory). queries `[LB, cQ, C]`, memory keys / values
        `[LB, M, cQ, C]` (or None before the first clip) -> `[LB, cQ, C]`."""
        update = self.query_value_projection(queries)
        if memory_keys is not None:
            query_keys = self.query_key_projection(queries)  # [LB, cQ, C]
            weights = torch.einsum("bqc,bmqc->bmq", query_keys, memory_keys).softmax(dim=1)  # [LB, M, cQ]
            update = update + torch.einsum("bmq,bmqc->bqc", weights, memory_values)
        return queries + update

    # ------------------------------------------------------------------ one clip
    def forward(self, frame_queries: torch.Tensor, memory: ClipMemory) -> ObjectDecoderOutput:
        """
        Args:
            frame_queries: `[LB, Tc, fQ, C]` normalised frame-decoder queries of one clip.
            memory: state carried from the previous clips of the same `LB` sequences.
        """
        return self.decode(self.encode_clips(frame_queries), memory, num_frames=frame_queries.shape[1])

    def decode(self, frame_tokens: torch.Tensor, memory: ClipMemory, num_frames: int) -> ObjectDecoderOutput:
        """The clip queries read the memory, then decode the clip's encoded frame queries (`encode_clips`,
        `[LB, Tc * fQ, C]`, `Tc = num_frames`); the heads and the memory update follow."""
        batch = frame_tokens.shape[0]
        queries = memory.queries
        if queries is None:
            queries = self.query_features.weight.unsqueeze(0).expand(batch, -1, -1)
        memory_keys, memory_values = memory.stacked()
        queries, hidden_states = self.decode_queries(frame_tokens, queries, memory_keys, memory_values, num_frames)

        last = hidden_states[-1]
        new_memory = ClipMemory(
            queries=queries,
            keys=[*memory.keys, self.memory_key_projection(last)],
            values=[*memory.values, self.memory_value_projection(last)],
        )
        return ObjectDecoderOutput(
            hidden_states=hidden_states,
            class_logits=self.class_predictor(hidden_states),
            mask_embeddings=self.mask_embedder(hidden_states),
            clip_similarity_embeddings=(
                self.clip_similarity_embedder(hidden_states) if self.clip_similarity_embedder is not None else None
            ),
            frame_similarity_embeddings=(
                self.frame_similarity_embedder(frame_tokens) if self.frame_similarity_embedder is not None else None
            ),
            memory=new_memory,
        )

    def decode_queries(self, frame_tokens: torch.Tensor, queries: torch.Tensor, memory_keys: torch.Tensor | None,
                       memory_values: torch.Tensor | None, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """The transformer part of `decode`, on tensors only: frame_tokens `[LB, Tc * fQ, C]`, queries `[LB, cQ, C]`
        (raw, from the previous clip), memory keys / values `[LB, M, cQ, C]` or None -> (the raw last-layer
        queries `[LB, cQ, C]`, normalised layer outputs `[D, LB, cQ, C]`: every layer with deep supervision in
        training, else the last)."""
        # Position of frame token (t, q) is the embedding of q, whatever t.
        frame_token_position = self.frame_query_position_embeddings.weight.repeat(num_frames, 1).unsqueeze(0)
        query_position = self.query_position_embeddings.weight.unsqueeze(0)  # [1, cQ, C]
        queries = self.read_memory(queries, memory_keys, memory_values)  # [LB, cQ, C]
        collected = []
        keep_all = self.training and self.deep_supervision
        for index, layer in enumerate(self.decoder_layers):
            queries = layer(queries, frame_tokens, frame_token_position, query_position)
            if keep_all or index == len(self.decoder_layers) - 1:
                collected.append(self.decoder_norm(queries))
        return queries, torch.stack(collected)  # [LB, cQ, C], [D, LB, cQ, C]
