"""ResNet as detectron2 builds it for GenVIS: stride in the 3x3 conv (unless `stride_in_1x1`), frozen batch
norm after every conv, bottleneck (depth >= 50) or basic blocks (18, 34). Returns res2..res5.

At inference on CPUs (no autograd, FrozenBN, a oneDNN build of torch) every conv + frozen BN (+ residual add)
(+ ReLU) runs as ONE oneDNN convolution over channels-last maps: the batch norm folded into the weights and bias,
the add and the ReLU as post-ops (`torch.ops.mkldnn._convolution_pointwise`, what inductor emits on CPUs). That
drops the separate batch-norm, add and ReLU passes over every map and oneDNN's NCHW reorders: ~25% faster, and
equal to the unfused graph up to float rounding (~1e-6 relative). `GENVIS_HF_FUSED_CONV=0` turns it off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .layers import DerivedTensorCache, FrozenBatchNorm2d, onednn_fused_conv_available
from .winograd import transform_weight, winograd_applies, winograd_conv3x3

_BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


NORMS = ("FrozenBN", "GN")


def group_norm_groups(channels: int) -> int:
    """Groups of the `"GN"` norm: 32 as detectron2 where there are >= 128 channels, else 4 channels a group."""
    return 32 if channels >= 128 and channels % 32 == 0 else max(1, channels // 4)


def use_fused_inference(x: torch.Tensor) -> bool:
    """Whether the backbone runs its fused oneDNN inference path on `x` (see the module docstring)."""
    return (
        not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and onednn_fused_conv_available()
    )


class ConvFrozenBN(nn.Module):
    """Bias-free `Conv2d` followed by `FrozenBatchNorm2d` (detectron2's default) or, with `norm="GN"`, a trainable
    `GroupNorm` (`MODEL.RESNETS.NORM: "GN"`; what a backbone trained from scratch needs).

    `forward(x, residual=None, relu=False)` computes `relu?(norm(conv(x)) + residual?)`; with a frozen BN and
    without autograd on a CPU as one oneDNN convolution with the BN folded in (weights cached, refreshed when a
    weight or statistic changes).
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

        self._folded = DerivedTensorCache()  # (weight, bias) of the fused path
        self._winograd = DerivedTensorCache()  # (transformed weight, bias) of 3x3 stride-1 convs

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
        if isinstance(self.norm, FrozenBatchNorm2d) and use_fused_inference(x):
            return self._fused(x, residual, relu)
        out = self.norm(self.conv(x))
        if residual is not None:
            out += residual
        return F.relu(out, inplace=True) if relu else out

    def _folded_weight_and_bias(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The conv weight scaled by the frozen BN (channels-last, `[C_out, C_in/g, k, k]`) and its shift `[C_out]`,
        folded in float32 and cached until a weight or statistic is modified or replaced."""

        def fold() -> tuple[torch.Tensor, torch.Tensor]:
            scale, shift = self.norm.scale_and_shift()
            weight = self.conv.weight.float() * scale.float().view(-1, 1, 1, 1)
            return weight.to(dtype).contiguous(memory_format=torch.channels_last), shift.to(dtype)

        return self._folded.get((self.conv.weight, *self.norm.buffers()), fold, dtype)

    def _winograd_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded weight's Winograd transform `[36, C_in, C_out]` and the shift `[C_out]` (float32, cached)."""

        def fold_and_transform() -> tuple[torch.Tensor, torch.Tensor]:
            scale, shift = self.norm.scale_and_shift()
            weight = self.conv.weight.double() * scale.double().view(-1, 1, 1, 1)
            return transform_weight(weight), shift.float().contiguous()

        return self._winograd.get((self.conv.weight, *self.norm.buffers()), fold_and_transform)

    def _fused(self, x: torch.Tensor, residual: torch.Tensor | None, relu: bool) -> torch.Tensor:
        if residual is None and winograd_applies(x, self.conv):
            return winograd_conv3x3(x, *self._winograd_weight_and_bias(), relu=relu)
        weight, bias = self._folded_weight_and_bias(x.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        conv = self.conv
        geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        if residual is None:
            activation = "relu" if relu else "none"
            return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *geometry, activation, [], "")
        residual = residual.contiguous(memory_format=torch.channels_last)
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual, weight, bias, *geometry, "add", 1.0, "relu" if relu else None, [], None
        )


def max_pool_3x3_stride2(x: torch.Tensor) -> torch.Tensor:
    """`F.max_pool2d(x, 3, stride=2, padding=1)` as two separable passes of element-wise maxima over strided
    views. A maximum is exact, so the result is identical; on CPUs it is several times faster than ATen's
    pooling kernel, which is a noticeable share of the stem."""
    x = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    height, width = x.shape[-2:]
    rows = torch.maximum(torch.maximum(x[..., 0 : height - 2 : 2, :], x[..., 1 : height - 1 : 2, :]), x[..., 2:height:2, :])
    return torch.maximum(
        torch.maximum(rows[..., 0 : width - 2 : 2], rows[..., 1 : width - 1 : 2]), rows[..., 2:width:2]
    ).contiguous()


class ResNetStem(nn.Module):
    """7x7/2 conv + frozen BN + ReLU + 3x3/2 max-pool: stride 4."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "FrozenBN"):
        super().__init__()
        self.conv1 = ConvFrozenBN(in_channels, out_channels, kernel_size=7, stride=2, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x, relu=True)
        if (torch.is_grad_enabled() and x.requires_grad) or x.is_contiguous(memory_format=torch.channels_last):
            # autograd: its backward routes to one argmax; channels-last (fused path): ATen's kernel is vectorised
            return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        return max_pool_3x3_stride2(x)


class BottleneckBlock(GradientCheckpointingLayer):
    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int, stride: int,
                 num_groups: int, stride_in_1x1: bool, dilation: int, norm: str = "FrozenBN"):  # fmt: skip
        super().__init__()
        self.shortcut = (
            ConvFrozenBN(in_channels, out_channels, 1, stride=stride, norm=norm) if in_channels != out_channels else None
        )
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvFrozenBN(in_channels, bottleneck_channels, 1, stride=stride_1x1, norm=norm)
        self.conv2 = ConvFrozenBN(
            bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, dilation=dilation, groups=num_groups,
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
            ConvFrozenBN(in_channels, out_channels, 1, stride=stride, norm=norm) if in_channels != out_channels else None
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
                        in_channels, out_channels, bottleneck_channels, stride, num_groups, stride_in_1x1, dilation,
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
