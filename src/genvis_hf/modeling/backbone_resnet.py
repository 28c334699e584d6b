"""ResNet as detectron2 builds it for GenVIS: stride in the 3x3 conv (unless `stride_in_1x1`), frozen batch
norm after every conv, bottleneck (depth >= 50) or basic blocks (18, 34). Returns res2..res5."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .layers import FrozenBatchNorm2d

_BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


NORMS = ("FrozenBN", "GN")


def group_norm_groups(channels: int) -> int:
    """Groups of the `"GN"` norm: 32 as detectron2 where there are >= 128 channels, else 4 channels a group."""
    return 32 if channels >= 128 and channels % 32 == 0 else max(1, channels // 4)


class ConvFrozenBN(nn.Module):
    """Bias-free `Conv2d` followed by `FrozenBatchNorm2d` (detectron2's default) or, with `norm="GN"`, a trainable
    `GroupNorm` (`MODEL.RESNETS.NORM: "GN"`; what a backbone trained from scratch needs).

    `forward(x, residual=None, relu=False)` computes `relu?(norm(conv(x)) + residual?)`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, norm: str = "FrozenBN"):  # fmt: skip
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False)
        if norm == "GN":
            self.norm = nn.GroupNorm(group_norm_groups(out_channels), out_channels)
        else:
            self.norm = FrozenBatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
        out = self.norm(self.conv(x))
        if residual is not None:
            out = out + residual
        return F.relu(out) if relu else out


class ResNetStem(nn.Module):
    """7x7/2 conv + frozen BN + ReLU + 3x3/2 max-pool: stride 4."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "FrozenBN"):
        super().__init__()
        self.conv1 = ConvFrozenBN(in_channels, out_channels, kernel_size=7, stride=2, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.conv1(x, relu=True), kernel_size=3, stride=2, padding=1)


class BottleneckBlock(GradientCheckpointingLayer):
    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int, stride: int,
                 num_groups: int, stride_in_1x1: bool, dilation: int, norm: str = "FrozenBN"):  # fmt: skip
        super().__init__()
        self.shortcut = (
            ConvFrozenBN(in_channels, out_channels, 1, stride=stride, norm=norm)
            if in_channels != out_channels
            else None
        )
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvFrozenBN(in_channels, bottleneck_channels, 1, stride=stride_1x1, norm=norm)
        self.conv2 = ConvFrozenBN(
            bottleneck_channels,
            bottleneck_channels,
            3,
            stride=stride_3x3,
            dilation=dilation,
            groups=num_groups,
            norm=norm,
        )
        self.conv3 = ConvFrozenBN(bottleneck_channels, out_channels, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x, relu=True)
        out = self.conv2(out, relu=True)
        return self.conv3(out, residual=x if self.shortcut is None else self.shortcut(x), relu=True)


class BasicBlock(GradientCheckpointingLayer):
    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str = "FrozenBN"):
        super().__init__()
        self.shortcut = (
            ConvFrozenBN(in_channels, out_channels, 1, stride=stride, norm=norm)
            if in_channels != out_channels
            else None
        )
        self.conv1 = ConvFrozenBN(in_channels, out_channels, 3, stride=stride, norm=norm)
        self.conv2 = ConvFrozenBN(out_channels, out_channels, 3, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x, relu=True)
        return self.conv2(out, residual=x if self.shortcut is None else self.shortcut(x), relu=True)


class GenVISResNetBackbone(nn.Module):
    """detectron2 ResNet with frozen batch norm.

    Args:
        depth: 18, 34, 50, 101 or 152.
        stem_out_channels, res2_out_channels, width_per_group, num_groups, stride_in_1x1, res5_dilation, norm:
            as detectron2's `MODEL.RESNETS.*` (`norm`: "FrozenBN" or "GN").

    Forward: `[N, 3, H, W]` -> list of 4 maps res2..res5, `[N, C_i, H / s_i, W / s_i]`, s = 4, 8, 16, 32.
    """

    def __init__(self, depth: int = 50, stem_out_channels: int = 64, res2_out_channels: int = 256,
                 width_per_group: int = 64, num_groups: int = 1, stride_in_1x1: bool = False,
                 res5_dilation: int = 1, norm: str = "FrozenBN"):  # fmt: skip
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"Unsupported ResNet norm {norm!r}; choose one of {NORMS}")
        if depth not in _BLOCKS_PER_STAGE:
            raise ValueError(f"Unsupported ResNet depth {depth}; choose one of {sorted(_BLOCKS_PER_STAGE)}")
        if res5_dilation not in (1, 2):
            raise ValueError(f"res5_dilation must be 1 or 2, got {res5_dilation}")
        self.stem = ResNetStem(3, stem_out_channels, norm)

        in_channels = stem_out_channels
        out_channels = res2_out_channels
        bottleneck_channels = num_groups * width_per_group
        self.stages = nn.ModuleList()
        self.out_channels: list[int] = []
        for stage_index, num_blocks in enumerate(_BLOCKS_PER_STAGE[depth]):
            dilation = res5_dilation if stage_index == 3 else 1
            first_stride = 1 if stage_index == 0 or (stage_index == 3 and dilation == 2) else 2
            blocks = []
            for block_index in range(num_blocks):
                stride = first_stride if block_index == 0 else 1
                if depth >= 50:
                    block = BottleneckBlock(
                        in_channels,
                        out_channels,
                        bottleneck_channels,
                        stride,
                        num_groups,
                        stride_in_1x1,
                        dilation,
                        norm,
                    )
                else:
                    block = BasicBlock(in_channels, out_channels, stride, norm)
                blocks.append(block)
                in_channels = out_channels
            self.stages.append(nn.Sequential(*blocks))
            self.out_channels.append(out_channels)
            out_channels *= 2
            bottleneck_channels *= 2

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(pixel_values)  # [N, C_stem, H/4, W/4]
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
