"""Swin at CPU inference: the same blocks with less data movement and no products on padding.

A reference block (`modeling/backbone_swin.py`) normalises the tokens, zero-pads the map to whole windows, rolls it
(shifted blocks), copies it into windows, projects qkv of every windowed token (padding included), attends, projects
the output per window, copies the windows back, rolls back, crops, and adds the residual; then LayerNorm, MLP and a
second residual. `FastSwinBlock` computes the same thing as:

- qkv projected on the real tokens only; the windowed layout (padding, roll and partition) is ONE gather of those
  rows by a cached index, the padded tokens filled with the projection of zero (its bias), which is exactly what
  the reference's zero-padded normalised tokens project to;
- the attention of every (window, head) by `torch.ops.genvis.window_attention` from the packed qkv (relative-position
  bias gathered once per weight change, shift mask once per map size), in float32 also for a bfloat16 model;
- the windows gathered back to image order (reverse, roll back and crop: ONE gather), then the output projection on
  the real tokens only, with the residual add as its post-op (a per-token linear map commutes with any reordering
  of the tokens);
- the MLP's GELU and its residual add as post-ops of its two products (`fast_linear`).

On Swin-L at 448x608 the padding to whole windows adds 10-62% rows to a stage (28x38 -> 36x48 at stride 16), so
projecting real tokens only saves ~12% of the backbone's arithmetic. Equal to the reference up to float rounding.
"""

from __future__ import annotations

import functools

import torch

from ..modeling.backbone_swin import SwinBlock, SwinStage
from ..ops.window_attention import window_attention
from .conditions import compiled_ops_ready, cpu_inference
from .derived import DerivedTensorCache
from .layers import fast_linear
from .registry import FastModule, fast_variant_of


@functools.lru_cache(maxsize=64)
def _window_indices(
    height: int, width: int, window: int, shift: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a `height x width` map: (`gather` `[Hp*Wp]`, the source token of each windowed position, padding mapped to
    token 0; `padding` `[P]`, the windowed positions that are padding; `scatter` `[H*W]`, the windowed position of each
    token). Windowed positions are ordered window by window (row-major windows of the rolled, padded map), tokens
    row-major inside a window: the order of `window_partition(torch.roll(padded, -shift))`."""
    padded_h, padded_w = -(-height // window) * window, -(-width // window) * window
    rows = (torch.arange(padded_h) + shift) % padded_h  # rolled row r shows padded row (r + shift) % Hp
    cols = (torch.arange(padded_w) + shift) % padded_w
    source_row, source_col = torch.meshgrid(rows, cols, indexing="ij")  # [Hp, Wp] in rolled coordinates
    windowed = lambda t: t.view(padded_h // window, window, padded_w // window, window).permute(0, 2, 1, 3).reshape(-1)  # noqa: E731
    source_row, source_col = windowed(source_row), windowed(source_col)
    real = (source_row < height) & (source_col < width)
    source = torch.where(real, source_row * width + source_col, torch.zeros_like(source_row))
    scatter = torch.empty(height * width, dtype=torch.long)
    scatter[source[real]] = torch.nonzero(real).squeeze(1)
    return source, torch.nonzero(~real).squeeze(1), scatter


@fast_variant_of(SwinStage)
class FastSwinStage(FastModule, SwinStage):
    """The stage with its shift mask computed once per map size."""

    _FAST_ATTRIBUTES = ("_shift_masks",)

    def _setup_fast(self) -> None:
        self._shift_masks: dict = {}

    def _shift_mask(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return self.shift_attention_mask(height, width, device)
        key = (height, width, device)
        if key not in self._shift_masks:
            self._shift_masks.clear()  # the sizes of one video: keep the last only
            self._shift_masks[key] = self.shift_attention_mask(height, width, device).contiguous()
        return self._shift_masks[key]

    def forward(self, x: torch.Tensor, height: int, width: int):
        if self.training or not (cpu_inference(x, torch.float32) and compiled_ops_ready()):
            return super().forward(x, height, width)
        shift_mask = self._shift_mask(height, width, x.device)
        for block in self.blocks:
            x = block(x, height, width, shift_mask)
        if self.downsample is None:
            return x, x, height, width
        return x, self.downsample(x, height, width), (height + 1) // 2, (width + 1) // 2


@fast_variant_of(SwinBlock)
class FastSwinBlock(FastModule, SwinBlock):
    """See the module docstring; the reference computation under autograd, off CPUs or in other dtypes."""

    _FAST_ATTRIBUTES = ("_relative_bias",)

    def _setup_fast(self) -> None:
        self._relative_bias = DerivedTensorCache()  # [heads, N, N] from the table and the index

    def _bias(self) -> torch.Tensor:
        attention = self.attn
        tokens = attention.window_size**2

        def gather() -> torch.Tensor:
            bias = attention.relative_position_bias_table[attention.relative_position_index.view(-1)]
            return bias.view(tokens, tokens, -1).permute(2, 0, 1).contiguous().float()  # [heads, N, N]

        return self._relative_bias.get(
            (attention.relative_position_bias_table, attention.relative_position_index), gather
        )

    def forward(self, x: torch.Tensor, height: int, width: int, shift_mask: torch.Tensor) -> torch.Tensor:
        attention = self.attn
        if self.training or not (
            cpu_inference(x, torch.float32, torch.bfloat16) and attention.qkv.weight.dtype == x.dtype
            and compiled_ops_ready()
        ):  # fmt: skip
            return super().forward(x, height, width, shift_mask)
        batch, _tokens, channels = x.shape
        ws, shift = self.window_size, self.shift_size
        gather, padding, scatter = (t.to(x.device) for t in _window_indices(height, width, ws, shift))
        qkv = fast_linear(self.norm1(x), attention.qkv.weight, attention.qkv.bias)  # [B, H*W, 3C], real tokens
        windows = qkv.index_select(1, gather)  # [B, Hp*Wp, 3C]: padded, rolled, partitioned
        if padding.numel():  # the padded tokens are zeros after the norm: their projection is the bias
            fill = attention.qkv.bias if attention.qkv.bias is not None else qkv.new_zeros(3 * channels)
            windows[:, padding] = fill
        windows = windows.view(-1, ws * ws, 3 * channels).float()  # [B*nW, N, 3C]; attention in float32 (bf16 too)
        mask = shift_mask.float() if shift > 0 else None
        attended = window_attention(windows, self._bias(), mask, attention.num_heads, attention.scale)  # [B*nW, N, C]
        attended = attended.view(batch, -1, channels).index_select(1, scatter).to(x.dtype)  # [B, H*W, C], image order
        x = fast_linear(attended, attention.proj.weight, attention.proj.bias, residual=x)  # x + proj(attention)
        hidden = fast_linear(self.norm2(x), self.mlp.fc1.weight, self.mlp.fc1.bias, activation="gelu")
        return fast_linear(hidden, self.mlp.fc2.weight, self.mlp.fc2.bias, residual=x)
