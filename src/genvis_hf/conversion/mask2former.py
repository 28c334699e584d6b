"""Initialise GenVIS from transformers' Mask2Former (`Mask2FormerForUniversalSegmentation`).

GenVIS's frame-level detector IS Mask2Former (backbone -> deformable pixel decoder -> masked-attention decoder), and
the original recipe starts from Mask2Former's COCO instance-segmentation weights. This module maps a transformers
Mask2Former checkpoint (Swin backbones, as on the Hub; ResNet backbones, which transformers can build but no Hub
checkpoint uses) onto GenVIS's `backbone`, `pixel_decoder` and `frame_decoder`:

    init_from_mask2former("facebook/mask2former-swin-large-coco-instance", id2label=...)
        -> (GenVISForVideoInstanceSegmentation, Mask2FormerInitReport)

Every Mask2Former key is accounted for: mapped (`mapped`), or dropped with its reason (`dropped`: the loss-only
`criterion.empty_weight`, Swin's final `layernorm`, which a backbone's outputs do not use, batch-norm step counters);
every GenVIS key is mapped, computed (`computed`: Swin's relative position index, a function of the window size), or
intentionally new (`new`: the object encoder/decoder, GenVIS's own part; and the frame class head when the label
set differs, re-initialised as fine-tuning a folder with another label set does).

Where the two Swin implementations compute the same function (transformers' `SwinBackbone` always partitions into
windows, as the original), the frame-level class and mask logits equal Mask2Former's (`tests/test_mask2former_init.py`,
1e-4). They differ in one place: transformers adds an absolute position embedding (`use_absolute_embeddings`, off in
every Mask2Former Swin checkpoint) without resizing it unless asked to, whereas GenVIS always resizes it bicubically
to the input's patch grid, so with that option the outputs agree only at the pre-training image size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..configuration.configuration_genvis import GenVISConfig

# (Mask2Former key pattern, reason it has no GenVIS counterpart)
DROPPED_MASK2FORMER_KEYS: tuple[tuple[str, str], ...] = (
    (r"criterion\.empty_weight", "loss-only buffer of Mask2Former's criterion"),
    (r"model\.pixel_level_module\.encoder\.swin\.layernorm\.(weight|bias)",
     "Swin's final LayerNorm: the backbone returns the stage outputs through hidden_states_norms instead"),
    (r".*\.num_batches_tracked", "batch-norm step counter (GenVIS's batch norm is frozen)"),
)  # fmt: skip
# GenVIS keys that come from the window size, not from a checkpoint.
COMPUTED_GENVIS_KEYS = r"backbone\.layers\.\d+\.blocks\.\d+\.attn\.relative_position_index"
# GenVIS's own part: what Mask2Former does not have.
NEW_GENVIS_PREFIX = "object_decoder."
CLASS_HEAD_KEYS = ("frame_decoder.class_predictor.weight", "frame_decoder.class_predictor.bias")

_RESNET_DEPTHS = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
_STAGES = ["stage1", "stage2", "stage3", "stage4"]


class Mask2FormerInitError(ValueError):
    """The Mask2Former checkpoint cannot initialise GenVIS; the message (one line) says why."""


@dataclass
class Mask2FormerInitReport:
    """How every key was accounted for (names are GenVIS `GenVISModel` keys, or Mask2Former keys for `dropped`)."""

    source: str
    mapped: dict[str, list[str]] = field(default_factory=dict)  # GenVIS key -> the Mask2Former key(s) it came from
    dropped: dict[str, str] = field(default_factory=dict)  # Mask2Former key -> reason
    computed: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # class head of another label set

    def summary(self) -> str:
        sources = sum(len(v) for v in self.mapped.values())
        return (f"{len(self.mapped)} GenVIS tensors from {sources} Mask2Former tensors, {len(self.dropped)} Mask2Former "
                f"tensors dropped, {len(self.computed)} computed, {len(self.new)} new (object decoder"
                + (", frame class head re-initialised for another label set" if self.reinitialised else "") + ")")  # fmt: skip


# ---------------------------------------------------------------------------------------------- configuration
def genvis_config_from_mask2former(mask2former_config, **overrides: Any) -> GenVISConfig:
    """The `GenVISConfig` whose backbone, pixel decoder and frame decoder have the Mask2Former config's shape
    (the object decoder takes GenVIS's defaults at the same width; `overrides` change any field, e.g. the labels)."""
    backbone = mask2former_config.backbone_config
    if backbone is None:
        raise Mask2FormerInitError("the Mask2Former config has no backbone_config (a timm backbone or a named one)")
    out_features = list(getattr(backbone, "out_features", None) or [])
    if out_features != _STAGES:
        raise Mask2FormerInitError(f"the backbone must return {_STAGES}, this one returns {out_features}")
    if getattr(backbone, "hidden_act", "gelu" if backbone.model_type == "swin" else "relu") != (
        "gelu" if backbone.model_type == "swin" else "relu"
    ):
        raise Mask2FormerInitError(f"unsupported backbone activation {backbone.hidden_act!r}")
    if backbone.model_type == "swin":
        if getattr(backbone, "layer_norm_eps", 1e-5) != 1e-5:
            raise Mask2FormerInitError(f"Swin layer_norm_eps {backbone.layer_norm_eps} (GenVIS's Swin uses 1e-5)")
        image_size = backbone.image_size if isinstance(backbone.image_size, int) else backbone.image_size[0]
        kwargs = {
            "backbone_type": "swin", "swin_embed_dim": backbone.embed_dim, "swin_depths": list(backbone.depths),
            "swin_num_heads": list(backbone.num_heads), "swin_window_size": backbone.window_size,
            "swin_mlp_ratio": backbone.mlp_ratio, "swin_qkv_bias": backbone.qkv_bias,
            "swin_patch_size": backbone.patch_size, "swin_patch_norm": True,
            "swin_absolute_position_embedding": bool(backbone.use_absolute_embeddings),
            "swin_pretrain_image_size": image_size, "swin_drop_path_rate": backbone.drop_path_rate,
        }  # fmt: skip
    elif backbone.model_type == "resnet":
        depths = tuple(backbone.depths)
        bottleneck = backbone.layer_type == "bottleneck"
        depth = 50 if bottleneck and depths == (3, 4, 6, 3) else _RESNET_DEPTHS.get(depths)
        if depth is None or (depth < 50) == bottleneck:
            raise Mask2FormerInitError(f"unsupported ResNet ({backbone.layer_type} blocks, depths {list(depths)})")
        if backbone.downsample_in_first_stage:
            raise Mask2FormerInitError("unsupported ResNet: downsample_in_first_stage=True")
        sizes = list(backbone.hidden_sizes)
        if sizes != [sizes[0] * 2**i for i in range(4)]:
            raise Mask2FormerInitError(f"unsupported ResNet widths {sizes} (each stage must double the previous)")
        kwargs = {
            "backbone_type": "resnet", "resnet_depth": depth, "resnet_stem_out_channels": backbone.embedding_size,
            "resnet_res2_out_channels": sizes[0], "resnet_width_per_group": sizes[0] // 4 if bottleneck else 64,
            "resnet_num_groups": 1, "resnet_stride_in_1x1": bool(backbone.downsample_in_bottleneck),
            "resnet_norm": "FrozenBN",
        }  # fmt: skip
    else:
        raise Mask2FormerInitError(f"unsupported Mask2Former backbone {backbone.model_type!r} (Swin or ResNet)")
    config = mask2former_config
    kwargs.update(
        pixel_decoder_dim=config.feature_size, mask_dim=config.mask_feature_size,
        pixel_decoder_encoder_layers=config.encoder_layers, pixel_decoder_num_heads=config.num_attention_heads,
        pixel_decoder_num_points=4, pixel_decoder_ffn_dim=config.encoder_feedforward_dim,
        pixel_decoder_dropout=config.dropout, common_stride=config.common_stride,
        num_frame_queries=config.num_queries, frame_decoder_hidden_dim=config.hidden_dim,
        frame_decoder_layers=config.decoder_layers - 1, frame_decoder_num_heads=config.num_attention_heads,
        frame_decoder_ffn_dim=config.dim_feedforward, frame_decoder_pre_norm=config.pre_norm,
        frame_decoder_enforce_input_projection=config.enforce_input_projection,
        object_hidden_dim=config.hidden_dim, object_num_heads=config.num_attention_heads,
        num_labels=config.num_labels, id2label=dict(config.id2label), label2id=dict(config.label2id),
        class_weight=config.class_weight, mask_weight=config.mask_weight, dice_weight=config.dice_weight,
        no_object_weight=config.no_object_weight, train_num_points=config.train_num_points,
        oversample_ratio=config.oversample_ratio, importance_sample_ratio=config.importance_sample_ratio,
        freeze_detector=False,
    )  # fmt: skip
    if config.activation_function != "relu":
        raise Mask2FormerInitError(f"unsupported decoder activation {config.activation_function!r} (GenVIS uses relu)")
    kwargs.update(overrides)
    if "num_labels" not in overrides and "id2label" in overrides:
        kwargs["num_labels"] = len(overrides["id2label"])
    return GenVISConfig(**kwargs)


# ---------------------------------------------------------------------------------------------- key mapping
_SWIN = r"model\.pixel_level_module\.encoder\.swin\."
_SWIN_BLOCK = _SWIN + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
_RESNET = r"model\.pixel_level_module\.encoder\."
_PIXEL = r"model\.pixel_level_module\.decoder\."
_DECODER = r"model\.transformer_module\."
_LAYER = _DECODER + r"decoder\.layers\.(\d+)\."
_ABSOLUTE_POSITION = "model.pixel_level_module.encoder.swin.embeddings.position_embeddings"


def _one_to_one_rules(backbone_type: str, num_fpn_levels: int) -> list[tuple[str, Any]]:
    """(Mask2Former key pattern, GenVIS key template or function of the match) for every one-to-one tensor."""
    if backbone_type == "swin":
        backbone = [
            (_SWIN + r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"backbone.patch_embed.proj.\1"),
            (_SWIN + r"embeddings\.norm\.(weight|bias)", r"backbone.patch_embed.norm.\1"),
            (_SWIN_BLOCK + r"layernorm_before\.(weight|bias)", r"backbone.layers.\1.blocks.\2.norm1.\3"),
            (_SWIN_BLOCK + r"layernorm_after\.(weight|bias)", r"backbone.layers.\1.blocks.\2.norm2.\3"),
            (_SWIN_BLOCK + r"attention\.o_proj\.(weight|bias)", r"backbone.layers.\1.blocks.\2.attn.proj.\3"),
            (_SWIN_BLOCK + r"attention\.relative_position_bias\.relative_position_bias_table",
             r"backbone.layers.\1.blocks.\2.attn.relative_position_bias_table"),
            (_SWIN_BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)", r"backbone.layers.\1.blocks.\2.mlp.\3.\4"),
            (_SWIN + r"encoder\.layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)",
             r"backbone.layers.\1.downsample.\2"),
            (r"model\.pixel_level_module\.encoder\.hidden_states_norms\.stage([1-4])\.(weight|bias)",
             lambda m: f"backbone.output_norms.{int(m.group(1)) - 1}.{m.group(2)}"),
        ]  # fmt: skip
    else:
        layer_names = {"0": "conv1", "1": "conv2", "2": "conv3"}
        backbone = [
            (_RESNET + r"embedder\.embedder\.convolution\.weight", "backbone.stem.conv1.conv.weight"),
            (_RESNET + r"embedder\.embedder\.normalization\.(weight|bias|running_mean|running_var)",
             r"backbone.stem.conv1.norm.\1"),
            (_RESNET + r"encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.convolution\.weight",
             r"backbone.stages.\1.\2.shortcut.conv.weight"),
            (_RESNET + r"encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.normalization\.(weight|bias|running_mean|running_var)",
             r"backbone.stages.\1.\2.shortcut.norm.\3"),
            (_RESNET + r"encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.([012])\.convolution\.weight",
             lambda m: f"backbone.stages.{m.group(1)}.{m.group(2)}.{layer_names[m.group(3)]}.conv.weight"),
            (_RESNET + r"encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.([012])\.normalization\.(weight|bias|running_mean|running_var)",
             lambda m: f"backbone.stages.{m.group(1)}.{m.group(2)}.{layer_names[m.group(3)]}.norm.{m.group(4)}"),
        ]  # fmt: skip

    def fpn(kind: str, part: str):
        return lambda m: f"pixel_decoder.{kind}.{num_fpn_levels - int(m.group(1))}.{part}.{m.group(2)}"

    pixel_decoder = [
        (_PIXEL + r"level_embed", "pixel_decoder.level_embed"),
        (_PIXEL + r"input_projections\.(\d)\.([01])\.(weight|bias)", r"pixel_decoder.input_projections.\1.\2.\3"),
        (_PIXEL + r"encoder\.layers\.(\d+)\.self_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)\.(weight|bias)",
         r"pixel_decoder.encoder_layers.\1.self_attn.\2.\3"),
        (_PIXEL + r"encoder\.layers\.(\d+)\.(self_attn_layer_norm|fc1|fc2|final_layer_norm)\.(weight|bias)",
         r"pixel_decoder.encoder_layers.\1.\2.\3"),
        (_PIXEL + r"mask_projection\.(weight|bias)", r"pixel_decoder.mask_projection.\1"),
        (_PIXEL + r"adapter_(\d+)\.0\.(weight)", fpn("lateral_convs", "conv")),
        (_PIXEL + r"adapter_(\d+)\.1\.(weight|bias)", fpn("lateral_convs", "norm")),
        (_PIXEL + r"layer_(\d+)\.0\.(weight)", fpn("output_convs", "conv")),
        (_PIXEL + r"layer_(\d+)\.1\.(weight|bias)", fpn("output_convs", "norm")),
    ]  # fmt: skip
    frame_decoder = [
        (_DECODER + r"queries_embedder\.weight", "frame_decoder.query_position_embeddings.weight"),
        (_DECODER + r"queries_features\.weight", "frame_decoder.query_features.weight"),
        (_DECODER + r"level_embed\.weight", "frame_decoder.level_embed.weight"),
        (_DECODER + r"input_projections\.(\d)\.(weight|bias)", r"frame_decoder.input_projections.\1.\2"),
        (_LAYER + r"cross_attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)",
         r"frame_decoder.layers.\1.cross_attn.attention.\2"),
        (_LAYER + r"cross_attn_layer_norm\.(weight|bias)", r"frame_decoder.layers.\1.cross_attn.norm.\2"),
        (_LAYER + r"self_attn\.out_proj\.(weight|bias)", r"frame_decoder.layers.\1.self_attn.attention.out_proj.\2"),
        (_LAYER + r"self_attn_layer_norm\.(weight|bias)", r"frame_decoder.layers.\1.self_attn.norm.\2"),
        (_LAYER + r"(fc1|fc2)\.(weight|bias)", r"frame_decoder.layers.\1.ffn.\2.\3"),
        (_LAYER + r"final_layer_norm\.(weight|bias)", r"frame_decoder.layers.\1.ffn.norm.\2"),
        (_DECODER + r"decoder\.layernorm\.(weight|bias)", r"frame_decoder.decoder_norm.\1"),
        (_DECODER + r"decoder\.mask_predictor\.mask_embedder\.(\d)\.0\.(weight|bias)",
         r"frame_decoder.mask_embedder.layers.\1.\2"),
        (r"class_predictor\.(weight|bias)", r"frame_decoder.class_predictor.\1"),
    ]  # fmt: skip
    return backbone + pixel_decoder + frame_decoder


# Packed projections: the GenVIS tensor is the concatenation (dim 0) of the q, k, v tensors named by the pattern.
_PACKED_RULES: list[tuple[str, str]] = [
    (_SWIN_BLOCK + r"attention\.(?P<part>[qkv])_proj\.(weight|bias)", r"backbone.layers.\1.blocks.\2.attn.qkv.\4"),
    (
        _LAYER + r"self_attn\.(?P<part>[qkv])_proj\.(weight|bias)",
        r"frame_decoder.layers.\1.self_attn.attention.in_proj_\3",
    ),
]


def _dropped_reason(key: str) -> str | None:
    for pattern, reason in DROPPED_MASK2FORMER_KEYS:
        if re.fullmatch(pattern, key):
            return reason
    return None


def convert_mask2former_state_dict(
    state_dict: dict[str, torch.Tensor], model, keep_class_head: bool = True
) -> tuple[dict[str, torch.Tensor], Mask2FormerInitReport]:
    """Map a `Mask2FormerForUniversalSegmentation` state dict (transformers' current key names, as `from_pretrained`
    returns them) onto `model` (a `GenVISModel`). Returns the GenVIS tensors and the accounting; raises
    `Mask2FormerInitError` listing every key no rule explains or whose shape differs. The frame class head is
    re-initialised when `keep_class_head` is False or its size differs (another label set)."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    rules = [
        (re.compile(p), r) for p, r in _one_to_one_rules(model.config.backbone_type, model.pixel_decoder.num_fpn_levels)
    ]
    packed_rules = [(re.compile(p), r) for p, r in _PACKED_RULES]
    report = Mask2FormerInitReport(source="")
    converted: dict[str, torch.Tensor] = {}
    packed: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    unexplained, mismatched = [], []
    for key, value in state_dict.items():
        reason = _dropped_reason(key)
        if reason is not None:
            report.dropped[key] = reason
            continue
        if key == _ABSOLUTE_POSITION:  # [1, grid * grid, C] -> GenVIS's [1, C, grid, grid]
            grid = math.isqrt(value.shape[1])
            converted["backbone.absolute_pos_embed"] = value.reshape(1, grid, grid, -1).permute(0, 3, 1, 2).contiguous()
            report.mapped["backbone.absolute_pos_embed"] = [key]
            continue
        target = None
        for pattern, replacement in rules:
            match = pattern.fullmatch(key)
            if match:
                target = replacement(match) if callable(replacement) else match.expand(replacement)
                break
        if target is None:
            for pattern, replacement in packed_rules:
                match = pattern.fullmatch(key)
                if match:
                    part = match.group("part")
                    packed.setdefault(match.expand(replacement), {})[part] = (key, value)
                    break
            else:
                unexplained.append(key)
            continue
        converted[target] = value
        report.mapped[target] = [key]
    for target, parts in packed.items():
        if set(parts) != {"q", "k", "v"}:
            unexplained.append(f"{target}: only {sorted(parts)} of its q/k/v projections")
            continue
        converted[target] = torch.cat([parts[p][1] for p in "qkv"])
        report.mapped[target] = [parts[p][0] for p in "qkv"]

    for target, value in list(converted.items()):
        if target not in expected:
            unexplained.append(f"{report.mapped[target][0]} (-> {target}, which this GenVIS model does not have)")
            del converted[target], report.mapped[target]
        elif tuple(value.shape) != expected[target] and target not in CLASS_HEAD_KEYS:
            mismatched.append(
                f"{', '.join(report.mapped[target])}: {tuple(value.shape)} vs GenVIS {expected[target]} ({target})"
            )
    for target in CLASS_HEAD_KEYS:  # another label set: the head starts afresh, as fine-tuning does
        if target in converted and (not keep_class_head or tuple(converted[target].shape) != expected[target]):
            del converted[target], report.mapped[target]
            report.reinitialised.append(target)
    for name in expected:
        if name in converted or name in report.reinitialised:
            continue
        if re.fullmatch(COMPUTED_GENVIS_KEYS, name):
            report.computed.append(name)
        elif name.startswith(NEW_GENVIS_PREFIX):
            report.new.append(name)
        else:
            mismatched.append(f"{name}: no Mask2Former tensor maps onto it")
    problems = [f"{len(keys)} {title}: {'; '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                for title, keys in (("unexplained Mask2Former keys", unexplained), ("mismatches", mismatched)) if keys]  # fmt: skip
    if problems:
        raise Mask2FormerInitError(
            "the Mask2Former checkpoint does not fit this GenVIS config: " + " | ".join(problems)
        )
    return converted, report


# ---------------------------------------------------------------------------------------------- entry point
def load_mask2former(source, **from_pretrained_kwargs):
    """`Mask2FormerForUniversalSegmentation.from_pretrained(source)` (a directory or a Hub name, cached or
    downloadable), with a one-line `Mask2FormerInitError` when it cannot be loaded."""
    from transformers import Mask2FormerForUniversalSegmentation

    try:
        return Mask2FormerForUniversalSegmentation.from_pretrained(str(source), **from_pretrained_kwargs).eval()
    except (OSError, ValueError) as error:
        where = (
            "directory"
            if Path(str(source)).is_dir()
            else "name (not in the Hugging Face cache, and offline or not on the Hub)"
        )
        raise Mask2FormerInitError(
            f"cannot load Mask2Former {source!s} as a {where}: {str(error).splitlines()[0][:200]}"
        ) from error


def init_from_mask2former(source, *, mask2former=None, **config_overrides: Any):
    """A `GenVISForVideoInstanceSegmentation` whose backbone, pixel decoder and frame decoder are `source`'s
    Mask2Former weights and whose object decoder is freshly initialised; `config_overrides` set any GenVIS field,
    e.g. `id2label` (another label set, i.e. other class names: the frame class head is re-initialised) or the
    object decoder's shape. `mask2former`: an already loaded `Mask2FormerForUniversalSegmentation` (then `source`
    only names it).

    Returns `(model, Mask2FormerInitReport)`.
    """
    from ..modeling.modeling_genvis import GenVISForVideoInstanceSegmentation

    mask2former = mask2former if mask2former is not None else load_mask2former(source)
    config = genvis_config_from_mask2former(mask2former.config, **config_overrides)
    model = GenVISForVideoInstanceSegmentation(config)
    names = [str(config.id2label[i]) for i in range(config.num_labels)]
    same_labels = names == [str(mask2former.config.id2label[i]) for i in range(mask2former.config.num_labels)]
    converted, report = convert_mask2former_state_dict(
        mask2former.state_dict(), model.model, keep_class_head=same_labels
    )
    report.source = str(source)
    loaded = model.model.load_state_dict(converted, strict=False)
    # every converted key was checked against the model's, and every key left out is accounted for
    assert not loaded.unexpected_keys and set(loaded.missing_keys) == {
        *report.new,
        *report.computed,
        *report.reinitialised,
    }
    model.apply_freeze_detector()
    return model, report


__all__ = [
    "DROPPED_MASK2FORMER_KEYS",
    "Mask2FormerInitError",
    "Mask2FormerInitReport",
    "convert_mask2former_state_dict",
    "genvis_config_from_mask2former",
    "init_from_mask2former",
    "load_mask2former",
]
