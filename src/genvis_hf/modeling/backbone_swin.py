"""Swin Transformer as Mask2Former / GenVIS use it (the original Microsoft implementation's behaviour):
windows padded at the bottom/right, cyclic shift with a -100 mask, patch merging padded to even size,
and a LayerNorm on each returned stage (`norm0..norm3`). Returns res2..res5 as `[N, C, H, W]` maps.

transformers' and timm's Swin differ in padding, window clamping for small inputs and output norms, so
the original weights would not reproduce the original outputs through them; hence this module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """`[B, H, W, C]` -> `[B * H/ws * W/ws, ws, ws, C]` (H, W multiples of ws)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)


def window_reverse(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `window_partition`: `[B * nW, ws, ws, C]` -> `[B, H, W, C]`."""
    b = windows.shape[0] // (height * width // window_size // window_size)
    x = windows.view(b, height // window_size, width // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, height, width, -1)


def relative_position_index(window_size: int) -> torch.Tensor:
    """`[ws*ws, ws*ws]` int64 index into the `(2ws-1)^2` relative position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)  # [2, ws*ws]
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()  # [ws*ws, ws*ws, 2]
    relative[:, :, 0] += window_size - 1
    relative[:, :, 1] += window_size - 1
    relative[:, :, 0] *= 2 * window_size - 1
    return relative.sum(-1)


class SwinWindowAttention(nn.Module):
    """Window multi-head self-attention with a relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool, qk_scale: float | None):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # Persistent: the original checkpoints carry it, and it must survive `from_pretrained`.
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x `[B*nW, N, C]` (N = ws*ws); mask `[nW, N, N]` of 0 / -100 or None."""
        batch_windows, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(batch_windows, tokens, 3, self.num_heads, channels // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B*nW, h, N, d]
        attn = (q * self.scale) @ k.transpose(-2, -1)  # [B*nW, h, N, N]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(tokens, tokens, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.view(-1, num_windows, self.num_heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, tokens, tokens)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(batch_windows, tokens, channels)
        return self.proj(x)


class SwinMlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(GradientCheckpointingLayer):
    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float,
                 qkv_bias: bool, qk_scale: float | None, drop_path: float):  # fmt: skip
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SwinWindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, height: int, width: int, shift_mask: torch.Tensor) -> torch.Tensor:
        """x `[B, H*W, C]`; shift_mask `[nW, ws*ws, ws*ws]` used by shifted blocks."""
        batch, _, channels = x.shape
        ws = self.window_size
        shortcut = x
        x = self.norm1(x).view(batch, height, width, channels)
        pad_r = (ws - width % ws) % ws
        pad_b = (ws - height % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        padded_h, padded_w = x.shape[1], x.shape[2]

        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            mask = shift_mask
        else:
            mask = None
        windows = window_partition(x, ws).reshape(-1, ws * ws, channels)  # [B*nW, ws*ws, C]
        windows = self.attn(windows, mask=mask)
        x = window_reverse(windows.view(-1, ws, ws, channels), ws, padded_h, padded_w)  # [B, Hp, Wp, C]
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        if pad_r > 0 or pad_b > 0:
            x = x[:, :height, :width, :].contiguous()
        x = shortcut + self.drop_path(x.view(batch, height * width, channels))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinPatchMerging(nn.Module):
    """2x2 neighbourhood concat (padded to even size) -> LayerNorm -> Linear(4C, 2C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, _, channels = x.shape
        x = x.view(batch, height, width, channels)
        if height % 2 == 1 or width % 2 == 1:
            x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(batch, -1, 4 * channels)))  # [B, H/2*W/2, 2C]


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 qkv_bias: bool, qk_scale: float | None, drop_path: list[float], downsample: bool):  # fmt: skip
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                num_heads,
                window_size,
                0 if i % 2 == 0 else window_size // 2,
                mlp_ratio,
                qkv_bias,
                qk_scale,
                drop_path[i],
            )
            for i in range(depth)
        )
        self.downsample = SwinPatchMerging(dim) if downsample else None

    def shift_attention_mask(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """`[nW, ws*ws, ws*ws]`: 0 within a region of the shifted image, -100 across regions."""
        ws, shift = self.window_size, self.shift_size
        padded_h = math.ceil(height / ws) * ws
        padded_w = math.ceil(width / ws) * ws
        image_mask = torch.zeros((1, padded_h, padded_w, 1), device=device)
        slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
        region = 0
        for h in slices:
            for w in slices:
                image_mask[:, h, w, :] = region
                region += 1
        mask_windows = window_partition(image_mask, ws).reshape(-1, ws * ws)
        mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

    def forward(self, x: torch.Tensor, height: int, width: int):
        shift_mask = self.shift_attention_mask(height, width, x.device).to(x.dtype)
        for block in self.blocks:
            x = block(x, height, width, shift_mask)
        if self.downsample is None:
            return x, x, height, width
        return x, self.downsample(x, height, width), (height + 1) // 2, (width + 1) // 2


class SwinPatchEmbedding(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int, patch_norm: bool):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        _, _, height, width = pixel_values.shape
        p = self.patch_size
        if width % p != 0:
            pixel_values = F.pad(pixel_values, (0, p - width % p))
        if height % p != 0:
            pixel_values = F.pad(pixel_values, (0, 0, 0, p - height % p))
        x = self.proj(pixel_values)  # [B, C, H/p, W/p]
        if self.norm is not None:
            h, w = x.shape[2:]
            x = self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).view(-1, x.shape[1], h, w)
        return x


class GenVISSwinBackbone(nn.Module):
    """Swin Transformer returning the four stages (each LayerNorm'ed) as `[N, C_i, H/s_i, W/s_i]` maps.

    Args mirror `MODEL.SWIN.*` of the original configs.
    """

    def __init__(self, embed_dim: int = 96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size: int = 7,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: float | None = None, patch_size: int = 4,
                 patch_norm: bool = True, absolute_position_embedding: bool = False,
                 pretrain_image_size: int = 224, drop_path_rate: float = 0.3):  # fmt: skip
        super().__init__()
        self.patch_embed = SwinPatchEmbedding(patch_size, embed_dim, patch_norm)
        if absolute_position_embedding:
            grid = pretrain_image_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
        else:
            self.absolute_pos_embed = None
        total = sum(depths)  # stochastic depth grows linearly over all blocks (python floats: meta-device safe)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.layers = nn.ModuleList()
        self.out_channels = [int(embed_dim * 2**i) for i in range(len(depths))]
        for i, depth in enumerate(depths):
            self.layers.append(
                SwinStage(
                    self.out_channels[i],
                    depth,
                    num_heads[i],
                    window_size,
                    mlp_ratio,
                    qkv_bias,
                    qk_scale,
                    rates[sum(depths[:i]) : sum(depths[: i + 1])],
                    downsample=i < len(depths) - 1,
                )
            )
        self.output_norms = nn.ModuleList(nn.LayerNorm(c) for c in self.out_channels)

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(pixel_values)  # [B, C, H/4, W/4]
        height, width = x.shape[2:]
        if self.absolute_pos_embed is not None:
            x = x + F.interpolate(self.absolute_pos_embed, size=(height, width), mode="bicubic")
        x = x.flatten(2).transpose(1, 2)  # [B, H*W, C]
        features = []
        for stage, norm, channels in zip(self.layers, self.output_norms, self.out_channels):
            stage_out, x, next_h, next_w = stage(x, height, width)
            stage_out = norm(stage_out)
            features.append(stage_out.view(-1, height, width, channels).permute(0, 3, 1, 2).contiguous())
            height, width = next_h, next_w
        return features
