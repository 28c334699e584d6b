"""The backbones GenVIS can be built with, by `config.backbone_type`: one builder per type."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..configuration.configuration_genvis import GenVISConfig
from .backbone_resnet import GenVISResNetBackbone
from .backbone_swin import GenVISSwinBackbone


def _resnet(config: GenVISConfig) -> nn.Module:
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


def _swin(config: GenVISConfig) -> nn.Module:
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


# backbone_type -> builder; each backbone returns res2..res5 as [N, C_i, H / s_i, W / s_i], s = 4, 8, 16, 32.
BACKBONES: dict[str, Callable[[GenVISConfig], nn.Module]] = {"resnet": _resnet, "swin": _swin}


def build_backbone(config: GenVISConfig) -> nn.Module:
    builder = BACKBONES.get(config.backbone_type)
    if builder is None:
        raise ValueError(f"unknown backbone_type {config.backbone_type!r}; known backbones: {sorted(BACKBONES)}")
    return builder(config)
