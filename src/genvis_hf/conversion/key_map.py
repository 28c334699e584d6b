"""Original (detectron2 GenVIS) state-dict names -> `GenVISModel` names. The only place the original names
appear. Every rule is explicit; a key no rule matches is reported, never guessed."""

from __future__ import annotations

import re
from collections.abc import Callable

# Loss-only buffers of the original criteria: the only keys allowed to be dropped.
DROPPED_KEYS = ("criterion.empty_weight", "vita_criterion.empty_weight", "genvis_criterion.empty_weight")

_ATTENTION_PARAMS = r"(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)"
_NORM_PARAMS = r"(weight|bias)"
_FROZEN_BN_PARAMS = r"(weight|bias|running_mean|running_var)"


def _transformer_layer_rules(source: str, target: str) -> list[tuple[str, str]]:
    """Rules for the original's per-kind layer lists (cross / self attention / FFN) of one decoder."""
    return [
        (rf"{source}\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.{_ATTENTION_PARAMS}",
         rf"{target}.\1.cross_attn.attention.\2"),
        (rf"{source}\.transformer_cross_attention_layers\.(\d+)\.norm\.{_NORM_PARAMS}", rf"{target}.\1.cross_attn.norm.\2"),
        (rf"{source}\.transformer_self_attention_layers\.(\d+)\.self_attn\.{_ATTENTION_PARAMS}",
         rf"{target}.\1.self_attn.attention.\2"),
        (rf"{source}\.transformer_self_attention_layers\.(\d+)\.norm\.{_NORM_PARAMS}", rf"{target}.\1.self_attn.norm.\2"),
        (rf"{source}\.transformer_ffn_layers\.(\d+)\.linear1\.{_NORM_PARAMS}", rf"{target}.\1.ffn.fc1.\2"),
        (rf"{source}\.transformer_ffn_layers\.(\d+)\.linear2\.{_NORM_PARAMS}", rf"{target}.\1.ffn.fc2.\2"),
        (rf"{source}\.transformer_ffn_layers\.(\d+)\.norm\.{_NORM_PARAMS}", rf"{target}.\1.ffn.norm.\2"),
    ]  # fmt: skip


def _resnet_stage(match: re.Match) -> str:
    """`backbone.res{2..5}.{block}.{conv}` -> `backbone.stages.{0..3}.{block}.{conv}`."""
    return f"backbone.stages.{int(match.group(1)) - 2}.{match.group(2)}.{match.group(3)}"


_RESNET_RULES: list[tuple[str, str | Callable[[re.Match], str]]] = [
    (r"backbone\.stem\.conv1\.weight", "backbone.stem.conv1.conv.weight"),
    (rf"backbone\.stem\.conv1\.norm\.{_FROZEN_BN_PARAMS}", r"backbone.stem.conv1.norm.\1"),
    (r"backbone\.res([2-5])\.(\d+)\.(conv1|conv2|conv3|shortcut)\.weight", lambda m: f"{_resnet_stage(m)}.conv.weight"),
    (rf"backbone\.res([2-5])\.(\d+)\.(conv1|conv2|conv3|shortcut)\.norm\.{_FROZEN_BN_PARAMS}",
     lambda m: f"{_resnet_stage(m)}.norm.{m.group(4)}"),
]  # fmt: skip

_SWIN_RULES: list[tuple[str, str]] = [
    (r"backbone\.patch_embed\.(proj|norm)\.(weight|bias)", r"backbone.patch_embed.\1.\2"),
    (r"backbone\.absolute_pos_embed", "backbone.absolute_pos_embed"),
    (r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
     r"backbone.layers.\1.blocks.\2.\3.\4"),
    (r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.attn\.(relative_position_bias_table|relative_position_index)",
     r"backbone.layers.\1.blocks.\2.attn.\3"),
    (r"backbone\.layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)", r"backbone.layers.\1.downsample.\2"),
    (r"backbone\.norm(\d+)\.(weight|bias)", r"backbone.output_norms.\1.\2"),
]  # fmt: skip

_PIXEL = r"sem_seg_head\.pixel_decoder"
_ENCODER = rf"{_PIXEL}\.transformer\.encoder\.layers\.(\d+)"
_PIXEL_DECODER_RULES: list[tuple[str, str | Callable[[re.Match], str]]] = [
    (rf"{_PIXEL}\.input_proj\.(\d+)\.([01])\.(weight|bias)", r"pixel_decoder.input_projections.\1.\2.\3"),
    (rf"{_PIXEL}\.transformer\.level_embed", "pixel_decoder.level_embed"),
    (rf"{_ENCODER}\.self_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)\.(weight|bias)",
     r"pixel_decoder.encoder_layers.\1.self_attn.\2.\3"),
    (rf"{_ENCODER}\.norm1\.(weight|bias)", r"pixel_decoder.encoder_layers.\1.self_attn_layer_norm.\2"),
    (rf"{_ENCODER}\.linear1\.(weight|bias)", r"pixel_decoder.encoder_layers.\1.fc1.\2"),
    (rf"{_ENCODER}\.linear2\.(weight|bias)", r"pixel_decoder.encoder_layers.\1.fc2.\2"),
    (rf"{_ENCODER}\.norm2\.(weight|bias)", r"pixel_decoder.encoder_layers.\1.final_layer_norm.\2"),
    (rf"{_PIXEL}\.mask_features\.(weight|bias)", r"pixel_decoder.mask_projection.\1"),
]  # fmt: skip

_PREDICTOR = r"sem_seg_head\.predictor"
_FRAME_DECODER_RULES: list[tuple[str, str]] = [
    *_transformer_layer_rules(_PREDICTOR, "frame_decoder.layers"),
    (rf"{_PREDICTOR}\.decoder_norm\.(weight|bias)", r"frame_decoder.decoder_norm.\1"),
    (rf"{_PREDICTOR}\.query_feat\.weight", "frame_decoder.query_features.weight"),
    (rf"{_PREDICTOR}\.query_embed\.weight", "frame_decoder.query_position_embeddings.weight"),
    (rf"{_PREDICTOR}\.level_embed\.weight", "frame_decoder.level_embed.weight"),
    (rf"{_PREDICTOR}\.input_proj\.(\d+)\.(weight|bias)", r"frame_decoder.input_projections.\1.\2"),
    (rf"{_PREDICTOR}\.class_embed\.(weight|bias)", r"frame_decoder.class_predictor.\1"),
    (rf"{_PREDICTOR}\.mask_embed\.layers\.(\d+)\.(weight|bias)", r"frame_decoder.mask_embedder.layers.\1.\2"),
]

_VITA = r"vita_module"
_OBJECT_DECODER_RULES: list[tuple[str, str]] = [
    *_transformer_layer_rules(_VITA, "object_decoder.decoder_layers"),
    (rf"{_VITA}\.enc_self_attn\.(\d+)\.self_attn\.{_ATTENTION_PARAMS}", r"object_decoder.encoder_layers.\1.self_attn.attention.\2"),
    (rf"{_VITA}\.enc_self_attn\.(\d+)\.norm\.(weight|bias)", r"object_decoder.encoder_layers.\1.self_attn.norm.\2"),
    (rf"{_VITA}\.enc_ffn\.(\d+)\.linear1\.(weight|bias)", r"object_decoder.encoder_layers.\1.ffn.fc1.\2"),
    (rf"{_VITA}\.enc_ffn\.(\d+)\.linear2\.(weight|bias)", r"object_decoder.encoder_layers.\1.ffn.fc2.\2"),
    (rf"{_VITA}\.enc_ffn\.(\d+)\.norm\.(weight|bias)", r"object_decoder.encoder_layers.\1.ffn.norm.\2"),
    (rf"{_VITA}\.vita_mask_features\.(weight|bias)", r"object_decoder.mask_projection.\1"),
    (rf"{_VITA}\.decoder_norm\.(weight|bias)", r"object_decoder.decoder_norm.\1"),
    (rf"{_VITA}\.query_feat\.weight", "object_decoder.query_features.weight"),
    (rf"{_VITA}\.query_embed\.weight", "object_decoder.query_position_embeddings.weight"),
    (rf"{_VITA}\.fq_pos\.weight", "object_decoder.frame_query_position_embeddings.weight"),
    (rf"{_VITA}\.input_proj_dec\.(weight|bias)", r"object_decoder.input_projection.\1"),
    (rf"{_VITA}\.class_embed\.(weight|bias)", r"object_decoder.class_predictor.\1"),
    (rf"{_VITA}\.mask_embed\.layers\.(\d+)\.(weight|bias)", r"object_decoder.mask_embedder.layers.\1.\2"),
    (rf"{_VITA}\.sim_embed_frame\.(weight|bias)", r"object_decoder.frame_similarity_embedder.\1"),
    (rf"{_VITA}\.sim_embed_clip\.(weight|bias)", r"object_decoder.clip_similarity_embedder.\1"),
    (rf"{_VITA}\.pre_memory_embed_k\.(weight|bias)", r"object_decoder.memory_key_projection.\1"),
    (rf"{_VITA}\.pre_memory_embed_v\.(weight|bias)", r"object_decoder.memory_value_projection.\1"),
    (rf"{_VITA}\.pre_query_embed_k\.(weight|bias)", r"object_decoder.query_key_projection.\1"),
    (rf"{_VITA}\.pre_query_embed_v\.(weight|bias)", r"object_decoder.query_value_projection.\1"),
]  # fmt: skip


def _fpn_rules(num_fpn_levels: int) -> list[tuple[str, Callable[[re.Match], str]]]:
    """The original names FPN convs by input level (`adapter_1`/`layer_1` read res2, the finest); ours are
    ordered top-down (coarse to fine), so level k is index `num_fpn_levels - k`."""

    def target(kind: str, match: re.Match, param: str) -> str:
        return f"pixel_decoder.{kind}.{num_fpn_levels - int(match.group(1))}.{param}"

    return [
        (rf"{_PIXEL}\.adapter_(\d+)\.weight", lambda m: target("lateral_convs", m, "conv.weight")),
        (rf"{_PIXEL}\.adapter_(\d+)\.norm\.(weight|bias)", lambda m: target("lateral_convs", m, f"norm.{m.group(2)}")),
        (rf"{_PIXEL}\.layer_(\d+)\.weight", lambda m: target("output_convs", m, "conv.weight")),
        (rf"{_PIXEL}\.layer_(\d+)\.norm\.(weight|bias)", lambda m: target("output_convs", m, f"norm.{m.group(2)}")),
    ]  # fmt: skip


def key_rules(backbone_type: str, num_fpn_levels: int = 1) -> list[tuple[re.Pattern, str | Callable]]:
    """Compiled (pattern, replacement) rules for a model with the given backbone."""
    backbone_rules = _RESNET_RULES if backbone_type == "resnet" else _SWIN_RULES
    rules = [*backbone_rules, *_PIXEL_DECODER_RULES, *_fpn_rules(num_fpn_levels), *_FRAME_DECODER_RULES,
             *_OBJECT_DECODER_RULES]  # fmt: skip
    return [(re.compile(pattern + r"$"), replacement) for pattern, replacement in rules]


def map_key(original_key: str, rules: list[tuple[re.Pattern, str | Callable]]) -> str | None:
    """Our name for `original_key`, or None when no rule matches (it must be reported)."""
    for pattern, replacement in rules:
        match = pattern.match(original_key)
        if match:
            return replacement(match) if callable(replacement) else match.expand(replacement)
    return None
