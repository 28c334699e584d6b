"""Read a resolved detectron2 config (what `cfg.dump()` writes, e.g. the fixtures' `config.yaml`) into
`GenVISConfig` keyword arguments (`config_kwargs_from_original`) and `GenVISVideoProcessor` ones
(`processor_kwargs_from_original`). Settings this implementation does not support raise, naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..configuration.presets import DATASETS

_BACKBONES = {"build_resnet_backbone": "resnet", "D2SwinTransformer": "swin"}


class OriginalConfigError(ValueError):
    """The original config uses a setting `genvis_hf` cannot reproduce; the message names the key."""


def _get(cfg: dict, dotted: str, default: Any = KeyError) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is KeyError:
                raise OriginalConfigError(f"original config has no {dotted}")
            return default
        node = node[part]
    return node


def _require(cfg: dict, dotted: str, allowed: tuple, default: Any = KeyError) -> Any:
    value = _get(cfg, dotted, default)
    if value not in allowed:
        raise OriginalConfigError(f"{dotted} = {value!r} is not supported (supported: {allowed})")
    return value


def load_original_config(source: str | Path | dict) -> dict:
    """Parse a dumped detectron2 YAML (path or text-loaded dict)."""
    if isinstance(source, dict):
        return source
    with open(source, encoding="utf-8") as handle:
        cfg = yaml.safe_load(handle)
    if not isinstance(cfg, dict) or "MODEL" not in cfg:
        raise OriginalConfigError(f"{source}: not a resolved detectron2 config (no MODEL section)")
    return cfg


def _class_names(cfg: dict, num_classes: int) -> list[str]:
    """Class names from the config's test data set name when it is a known one with the same class count."""
    test_sets = _get(cfg, "DATASETS.TEST", []) or []
    name = str(test_sets[0]) if test_sets else ""
    for key, marker in (("ytvis21", "ytvis_2021"), ("ytvis19", "ytvis_2019"), ("ovis", "ovis")):
        if marker in name and len(DATASETS[key]["classes"]) == num_classes:
            return list(DATASETS[key]["classes"])
    return [f"class_{i}" for i in range(num_classes)]


def config_kwargs_from_original(source: str | Path | dict) -> dict[str, Any]:
    """`GenVISConfig` keyword arguments equivalent to an original GenVIS config."""
    cfg = load_original_config(source)
    _require(cfg, "MODEL.META_ARCHITECTURE", ("Genvis",))
    _require(cfg, "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", ("MSDeformAttnPixelDecoder",))
    _require(cfg, "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME", ("VitaMultiScaleMaskedTransformerDecoder",))
    _require(cfg, "MODEL.SEM_SEG_HEAD.NORM", ("GN",))
    _require(cfg, "INPUT.FORMAT", ("RGB",), "RGB")
    in_features = _get(cfg, "MODEL.SEM_SEG_HEAD.IN_FEATURES")
    if list(in_features) != ["res2", "res3", "res4", "res5"]:
        raise OriginalConfigError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES = {in_features} is not supported")
    encoder_features = list(_get(cfg, "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES"))
    if encoder_features != in_features[-len(encoder_features) :]:
        raise OriginalConfigError(
            f"DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = {encoder_features} must be the coarsest backbone maps"
        )

    backbone_type = _BACKBONES.get(_get(cfg, "MODEL.BACKBONE.NAME"))
    if backbone_type is None:
        raise OriginalConfigError(f"MODEL.BACKBONE.NAME = {_get(cfg, 'MODEL.BACKBONE.NAME')!r} is not supported")
    kwargs: dict[str, Any] = {"backbone_type": backbone_type}
    if backbone_type == "resnet":
        _require(cfg, "MODEL.RESNETS.NORM", ("FrozenBN",))
        if any(_get(cfg, "MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False] * 4)):
            raise OriginalConfigError("MODEL.RESNETS.DEFORM_ON_PER_STAGE: deformable convolutions are not supported")
        kwargs.update(
            resnet_depth=_get(cfg, "MODEL.RESNETS.DEPTH"),
            resnet_stem_out_channels=_get(cfg, "MODEL.RESNETS.STEM_OUT_CHANNELS"),
            resnet_res2_out_channels=_get(cfg, "MODEL.RESNETS.RES2_OUT_CHANNELS"),
            resnet_width_per_group=_get(cfg, "MODEL.RESNETS.WIDTH_PER_GROUP"),
            resnet_num_groups=_get(cfg, "MODEL.RESNETS.NUM_GROUPS"),
            resnet_stride_in_1x1=_get(cfg, "MODEL.RESNETS.STRIDE_IN_1X1"),
            resnet_res5_dilation=_get(cfg, "MODEL.RESNETS.RES5_DILATION"),
        )
    else:
        kwargs.update(
            swin_embed_dim=_get(cfg, "MODEL.SWIN.EMBED_DIM"),
            swin_depths=list(_get(cfg, "MODEL.SWIN.DEPTHS")),
            swin_num_heads=list(_get(cfg, "MODEL.SWIN.NUM_HEADS")),
            swin_window_size=_get(cfg, "MODEL.SWIN.WINDOW_SIZE"),
            swin_mlp_ratio=_get(cfg, "MODEL.SWIN.MLP_RATIO"),
            swin_qkv_bias=_get(cfg, "MODEL.SWIN.QKV_BIAS"),
            swin_qk_scale=_get(cfg, "MODEL.SWIN.QK_SCALE"),
            swin_patch_size=_get(cfg, "MODEL.SWIN.PATCH_SIZE"),
            swin_patch_norm=_get(cfg, "MODEL.SWIN.PATCH_NORM"),
            swin_absolute_position_embedding=_get(cfg, "MODEL.SWIN.APE"),
            swin_pretrain_image_size=_get(cfg, "MODEL.SWIN.PRETRAIN_IMG_SIZE"),
            swin_drop_path_rate=_get(cfg, "MODEL.SWIN.DROP_PATH_RATE"),
        )

    num_classes = int(_get(cfg, "MODEL.SEM_SEG_HEAD.NUM_CLASSES"))
    classes = _class_names(cfg, num_classes)
    kwargs.update(
        id2label=dict(enumerate(classes)),
        label2id={name: i for i, name in enumerate(classes)},
        pixel_decoder_dim=_get(cfg, "MODEL.SEM_SEG_HEAD.CONVS_DIM"),
        mask_dim=_get(cfg, "MODEL.SEM_SEG_HEAD.MASK_DIM"),
        pixel_decoder_encoder_layers=_get(cfg, "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS"),
        pixel_decoder_num_heads=_get(cfg, "MODEL.MASK_FORMER.NHEADS"),  # the original reads this, not N_HEADS
        pixel_decoder_in_features=encoder_features,
        pixel_decoder_dropout=_get(cfg, "MODEL.MASK_FORMER.DROPOUT", 0.0),
        common_stride=_get(cfg, "MODEL.SEM_SEG_HEAD.COMMON_STRIDE"),
        num_frame_queries=_get(cfg, "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES"),
        frame_decoder_hidden_dim=_get(cfg, "MODEL.MASK_FORMER.HIDDEN_DIM"),
        frame_decoder_layers=int(_get(cfg, "MODEL.MASK_FORMER.DEC_LAYERS")) - 1,
        frame_decoder_num_heads=_get(cfg, "MODEL.MASK_FORMER.NHEADS"),
        frame_decoder_ffn_dim=_get(cfg, "MODEL.MASK_FORMER.DIM_FEEDFORWARD"),
        frame_decoder_pre_norm=_get(cfg, "MODEL.MASK_FORMER.PRE_NORM"),
        frame_decoder_enforce_input_projection=_get(cfg, "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ"),
        num_clip_queries=_get(cfg, "MODEL.VITA.NUM_OBJECT_QUERIES"),
        object_hidden_dim=_get(cfg, "MODEL.VITA.HIDDEN_DIM"),
        object_encoder_layers=_get(cfg, "MODEL.VITA.ENC_LAYERS"),
        object_decoder_layers=_get(cfg, "MODEL.VITA.DEC_LAYERS"),
        object_num_heads=_get(cfg, "MODEL.VITA.NHEADS"),
        object_ffn_dim=_get(cfg, "MODEL.VITA.DIM_FEEDFORWARD"),
        object_pre_norm=_get(cfg, "MODEL.VITA.PRE_NORM"),
        object_encoder_window_size=_get(cfg, "MODEL.VITA.ENC_WINDOW_SIZE"),
        object_enforce_input_projection=_get(cfg, "MODEL.VITA.ENFORCE_INPUT_PROJ"),
        use_similarity_heads=float(_get(cfg, "MODEL.VITA.SIM_WEIGHT")) > 0.0,
        similarity_use_clip=_get(cfg, "MODEL.VITA.SIM_USE_CLIP"),
        clip_length=_get(cfg, "MODEL.GENVIS.LEN_CLIP_WINDOW"),
        size_divisibility=_get(cfg, "MODEL.MASK_FORMER.SIZE_DIVISIBILITY"),
        class_weight=_get(cfg, "MODEL.MASK_FORMER.CLASS_WEIGHT"),
        mask_weight=_get(cfg, "MODEL.MASK_FORMER.MASK_WEIGHT"),
        dice_weight=_get(cfg, "MODEL.MASK_FORMER.DICE_WEIGHT"),
        no_object_weight=_get(cfg, "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT"),
        object_no_object_weight=_get(cfg, "MODEL.VITA.NO_OBJECT_WEIGHT"),
        similarity_weight=_get(cfg, "MODEL.VITA.SIM_WEIGHT"),
        train_num_points=_get(cfg, "MODEL.MASK_FORMER.TRAIN_NUM_POINTS"),
        oversample_ratio=_get(cfg, "MODEL.MASK_FORMER.OVERSAMPLE_RATIO"),
        importance_sample_ratio=_get(cfg, "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO"),
        frame_deep_supervision=_get(cfg, "MODEL.MASK_FORMER.DEEP_SUPERVISION"),
        object_deep_supervision=_get(cfg, "MODEL.VITA.DEEP_SUPERVISION"),
        frame_queries_last_layers=_get(cfg, "MODEL.VITA.LAST_LAYER_NUM"),
        freeze_detector=_get(cfg, "MODEL.VITA.FREEZE_DETECTOR"),
        train_num_frames=_get(cfg, "INPUT.SAMPLING_FRAME_NUM"),
        train_frame_range=_get(cfg, "INPUT.SAMPLING_FRAME_RANGE"),
    )
    kwargs["size_divisibility"] = _size_divisibility(cfg)
    return kwargs


def _size_divisibility(cfg: dict) -> int:
    value = int(_get(cfg, "MODEL.MASK_FORMER.SIZE_DIVISIBILITY"))
    return value if value > 0 else 32  # the original falls back to the backbone's (32 for both)


def processor_kwargs_from_original(source: str | Path | dict) -> dict[str, Any]:
    """`GenVISVideoProcessor` keyword arguments of an original config: the test resize, the pixel mean/std, the
    top-k per video and the padding multiple (the model config holds none of the first three)."""
    cfg = load_original_config(source)
    return {
        "size": {
            "shortest_edge": int(_get(cfg, "INPUT.MIN_SIZE_TEST")),
            "longest_edge": int(_get(cfg, "INPUT.MAX_SIZE_TEST")),
        },
        "image_mean": [float(v) for v in _get(cfg, "MODEL.PIXEL_MEAN")],
        "image_std": [float(v) for v in _get(cfg, "MODEL.PIXEL_STD")],
        "test_topk": int(_get(cfg, "TEST.DETECTIONS_PER_IMAGE")),
        "size_divisibility": _size_divisibility(cfg),
    }
