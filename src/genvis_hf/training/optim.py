"""The original GenVIS optimiser and schedule: AdamW whose backbone parameters get `backbone_multiplier` x the
learning rate, no weight decay on normalisation layers, embeddings and Swin's position tables; detectron2's
WarmupMultiStepLR (linear warm-up from `warmup_factor`, x `gamma` at each milestone); full-model gradient-norm
clipping is done by the training loop (`accelerator.clip_grad_norm_` over every parameter)."""

from __future__ import annotations

import bisect

import torch
from torch import nn

NORM_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm1d,
    nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm,
)  # fmt: skip
NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed", "absolute_position_embedding")


def parameter_groups(model: nn.Module, lr: float, weight_decay: float, backbone_multiplier: float) -> list[dict]:
    """One group per (learning rate, weight decay) combination, trainable parameters only."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            group_lr = lr * backbone_multiplier if "backbone" in module_name.split(".") else lr
            decay = weight_decay
            if isinstance(module, (*NORM_TYPES, nn.Embedding)) or any(n in name for n in NO_DECAY_NAMES):
                decay = 0.0
            groups.setdefault((group_lr, decay), []).append(parameter)
    return [{"params": params, "lr": group_lr, "weight_decay": decay} for (group_lr, decay), params in groups.items()]


def build_optimizer(model: nn.Module, lr: float = 5e-5, weight_decay: float = 0.05,
                    backbone_multiplier: float = 0.1) -> torch.optim.AdamW:  # fmt: skip
    return torch.optim.AdamW(parameter_groups(model, lr, weight_decay, backbone_multiplier), lr=lr)


def warmup_multistep_factor(step: int, warmup_steps: int, milestones: list[int], gamma: float = 0.1,
                            warmup_factor: float = 1.0) -> float:  # fmt: skip
    """detectron2 WarmupMultiStepLR (linear warm-up) learning-rate multiplier at `step`."""
    factor = gamma ** bisect.bisect_right(sorted(milestones), step)
    if step < warmup_steps:
        alpha = step / warmup_steps
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


def build_scheduler(optimizer, warmup_steps: int, milestones: list[int], gamma: float = 0.1,
                    warmup_factor: float = 1.0) -> torch.optim.lr_scheduler.LambdaLR:  # fmt: skip
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_multistep_factor(step, warmup_steps, milestones, gamma, warmup_factor)
    )


__all__ = ["build_optimizer", "build_scheduler", "parameter_groups", "warmup_multistep_factor"]
