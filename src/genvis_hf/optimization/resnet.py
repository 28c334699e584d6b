"""The ResNet at CPU inference: every conv + frozen BN (+ residual add) (+ ReLU) as ONE convolution.

The batch norm is folded into the weights and bias (in float32, cached until a weight or statistic changes), the add
and the ReLU become post-ops of oneDNN's convolution over channels-last maps (`torch.ops.genvis.conv2d_pointwise`),
and 3x3 stride-1 convolutions without a residual run by Winograd F(4x4, 3x3) (`torch.ops.genvis.winograd_conv3x3`,
ReLU in its output transform). That drops the separate batch-norm, add and ReLU passes over every map and oneDNN's
NCHW reorders, and does a quarter of the 3x3 multiply-adds; equal to the reference up to float rounding (~1e-6
relative; the maps come out channels-last).
"""

from __future__ import annotations

import torch

from ..modeling.backbone_resnet import ConvFrozenBN
from ..modeling.layers import FrozenBatchNorm2d
from ..ops.fused_conv import conv2d_pointwise
from ..ops.winograd import transform_weight, winograd_conv3x3
from .conditions import cpu_inference, fused_conv_ready, onednn_takes
from .derived import DerivedTensorCache
from .layers import winograd_applies
from .registry import FastModule, fast_variant_of


@fast_variant_of(ConvFrozenBN)
class FusedConvFrozenBN(FastModule, ConvFrozenBN):
    """`relu?(norm(conv(x)) + residual?)` as one oneDNN convolution (or a Winograd one) at CPU inference with a
    frozen BN; the reference computation otherwise (GroupNorm, autograd, other devices)."""

    _FAST_ATTRIBUTES = ("_folded", "_winograd")

    def _setup_fast(self) -> None:
        self._folded = DerivedTensorCache()  # (weight, bias) of the oneDNN path, per dtype
        self._winograd = DerivedTensorCache()  # (transformed weight, bias) of 3x3 stride-1 convs

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
        if not (
            isinstance(self.norm, FrozenBatchNorm2d)
            and cpu_inference(x, torch.float32, torch.bfloat16)
            and fused_conv_ready()
            and onednn_takes(x)
        ):
            return super().forward(x, residual, relu)
        if residual is None and winograd_applies(x, self.conv):
            return winograd_conv3x3(x, *self._winograd_weight_and_bias(), relu=relu)
        weight, bias = self._folded_weight_and_bias(x.dtype)
        return conv2d_pointwise(x, weight, bias, self.conv, residual=residual, relu=relu)

    def _folded_weight_and_bias(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The conv weight scaled by the frozen BN (channels-last, `[C_out, C_in/g, k, k]`) and its shift `[C_out]`,
        folded in float32."""

        def fold() -> tuple[torch.Tensor, torch.Tensor]:
            scale, shift = self.norm.scale_and_shift()
            weight = self.conv.weight.float() * scale.float().view(-1, 1, 1, 1)
            return weight.to(dtype).contiguous(memory_format=torch.channels_last), shift.to(dtype)

        return self._folded.get((self.conv.weight, *self.norm.buffers()), fold, dtype)

    def _winograd_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded weight's Winograd transform `[36, C_in, C_out]` and the shift `[C_out]` (float32; folded in
        float64)."""

        def fold_and_transform() -> tuple[torch.Tensor, torch.Tensor]:
            scale, shift = self.norm.scale_and_shift()
            weight = self.conv.weight.double() * scale.double().view(-1, 1, 1, 1)
            return transform_weight(weight), shift.float().contiguous()

        return self._winograd.get((self.conv.weight, *self.norm.buffers()), fold_and_transform)
