"""GenVIS model configuration."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

_BACKBONE_TYPES = ("resnet", "swin")
# Settings of earlier config files that belong to the video processor (its `size`, `image_mean`, `image_std`,
# `test_topk`): dropped when such a file is loaded.
PROCESSOR_FIELDS = ("test_min_size", "test_max_size", "image_mean", "image_std", "test_topk")
_DEFORMABLE_ATTENTION_BACKENDS = ("auto", "kernels", "jit", "torch")
# Sizes and counts: a value out of range would fail deep inside the model (or build an empty one) instead of here.
_POSITIVE_INTS = (
    "resnet_depth", "resnet_stem_out_channels", "resnet_res2_out_channels", "resnet_width_per_group",
    "resnet_num_groups", "resnet_res5_dilation", "swin_embed_dim", "swin_window_size", "swin_patch_size",
    "pixel_decoder_dim", "mask_dim", "pixel_decoder_num_heads", "pixel_decoder_num_points", "pixel_decoder_ffn_dim",
    "common_stride", "num_frame_queries", "frame_decoder_hidden_dim", "frame_decoder_num_heads",
    "frame_decoder_ffn_dim", "num_clip_queries", "object_hidden_dim", "object_num_heads", "object_ffn_dim",
    "size_divisibility", "train_num_points", "train_num_frames",
)  # fmt: skip
_NON_NEGATIVE_INTS = ("pixel_decoder_encoder_layers", "frame_decoder_layers", "object_encoder_layers",
                      "object_decoder_layers", "object_encoder_window_size", "train_frame_range")  # fmt: skip
_DIVISIBLE = (("pixel_decoder_dim", "pixel_decoder_num_heads"), ("frame_decoder_hidden_dim", "frame_decoder_num_heads"),
              ("object_hidden_dim", "object_num_heads"))  # fmt: skip


def _check_sizes(values: dict[str, Any]) -> None:
    """Raise ValueError naming the first size field that is not an integer in range."""
    for name in _POSITIVE_INTS + _NON_NEGATIVE_INTS:
        value = values[name]
        least = 1 if name in _POSITIVE_INTS else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    for dim, heads in _DIVISIBLE:
        if values[dim] % values[heads]:
            raise ValueError(f"{dim} ({values[dim]}) must be a multiple of {heads} ({values[heads]})")


class GenVISConfig(PretrainedConfig):
    r"""Configuration of a [`GenVISForVideoInstanceSegmentation`] model.

    GenVIS = backbone (ResNet or Swin) -> multi-scale deformable-attention pixel decoder -> Mask2Former
    frame decoder (frame queries) -> VITA object encoder/decoder with GenVIS clip-to-clip query propagation
    and memory (clip queries). Field names map one-to-one onto the original detectron2 keys; the original
    key is given after each group (`scripts/convert_checkpoint.py` reads them from a dumped YAML).

    Use [`GenVISConfig.from_preset`] for the released models, e.g.
    `GenVISConfig.from_preset("genvis-r50-ytvis19-semi-online")`.

    Pre- and post-processing values (test resize `INPUT.MIN/MAX_SIZE_TEST`, `MODEL.PIXEL_MEAN/STD`, the top-k
    `TEST.DETECTIONS_PER_IMAGE`) are not model settings: their one home is the video processor
    ([`GenVISVideoProcessor`], `video_preprocessor_config.json`; `GenVISVideoProcessor.from_preset(name)`).
    Older config files that still carry them (`PROCESSOR_FIELDS`) load with those keys ignored.

    Args:
        backbone_type (`str`, *optional*, defaults to `"resnet"`):
            `"resnet"` (detectron2 ResNet: stride in the 3x3 conv, frozen batch norm) or `"swin"` (the
            original Swin Transformer with a LayerNorm on each returned stage).
        resnet_depth (`int`, defaults to 50): `MODEL.RESNETS.DEPTH` (18, 34, 50, 101 or 152).
        resnet_stem_out_channels (`int`, defaults to 64): `MODEL.RESNETS.STEM_OUT_CHANNELS`.
        resnet_res2_out_channels (`int`, defaults to 256): `MODEL.RESNETS.RES2_OUT_CHANNELS`.
        resnet_width_per_group (`int`, defaults to 64): `MODEL.RESNETS.WIDTH_PER_GROUP`.
        resnet_num_groups (`int`, defaults to 1): `MODEL.RESNETS.NUM_GROUPS`.
        resnet_stride_in_1x1 (`bool`, defaults to `False`): `MODEL.RESNETS.STRIDE_IN_1X1`.
        resnet_res5_dilation (`int`, defaults to 1): `MODEL.RESNETS.RES5_DILATION`.
        resnet_norm (`str`, defaults to `"FrozenBN"`): `MODEL.RESNETS.NORM`, `"FrozenBN"` or `"GN"` (trainable group
            norm, for backbones trained from scratch such as `genvis-tiny`'s).
        swin_*: `MODEL.SWIN.*` (embed dim, depths, heads, window size, MLP ratio, qkv bias, qk scale,
            patch size, patch norm, absolute position embedding and its pre-training image size,
            drop-path rate).
        pixel_decoder_dim (`int`, defaults to 256): `MODEL.SEM_SEG_HEAD.CONVS_DIM`.
        mask_dim (`int`, defaults to 256): `MODEL.SEM_SEG_HEAD.MASK_DIM`.
        pixel_decoder_encoder_layers (`int`, defaults to 6): `MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS`.
        pixel_decoder_num_heads (`int`, defaults to 8): the original reads `MODEL.MASK_FORMER.NHEADS`.
        pixel_decoder_num_points (`int`, defaults to 4): sampling points per head and level (hard-coded).
        pixel_decoder_ffn_dim (`int`, defaults to 1024): hard-coded in the original.
        pixel_decoder_in_features (`list[str]`): `DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES`.
        pixel_decoder_dropout (`float`, defaults to 0.0): `MODEL.MASK_FORMER.DROPOUT` (deformable encoder).
        common_stride (`int`, defaults to 4): `MODEL.SEM_SEG_HEAD.COMMON_STRIDE`.
        num_frame_queries (`int`, defaults to 100): `MODEL.MASK_FORMER.NUM_OBJECT_QUERIES`.
        frame_decoder_hidden_dim (`int`, defaults to 256): `MODEL.MASK_FORMER.HIDDEN_DIM`.
        frame_decoder_layers (`int`, defaults to 9): transformer layers, i.e. `MODEL.MASK_FORMER.DEC_LAYERS - 1`
            (the original builds one prediction head more than it has layers).
        frame_decoder_num_heads (`int`, defaults to 8): `MODEL.MASK_FORMER.NHEADS`.
        frame_decoder_ffn_dim (`int`, defaults to 2048): `MODEL.MASK_FORMER.DIM_FEEDFORWARD`.
        frame_decoder_pre_norm (`bool`, defaults to `False`): `MODEL.MASK_FORMER.PRE_NORM`.
        frame_decoder_enforce_input_projection (`bool`): `MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ`.
        num_clip_queries (`int`, defaults to 100): `MODEL.VITA.NUM_OBJECT_QUERIES`.
        object_hidden_dim (`int`, defaults to 256): `MODEL.VITA.HIDDEN_DIM`.
        object_encoder_layers (`int`, defaults to 6): `MODEL.VITA.ENC_LAYERS`.
        object_decoder_layers (`int`, defaults to 3): `MODEL.VITA.DEC_LAYERS`.
        object_num_heads (`int`, defaults to 8): `MODEL.VITA.NHEADS`.
        object_ffn_dim (`int`, defaults to 2048): `MODEL.VITA.DIM_FEEDFORWARD`.
        object_pre_norm (`bool`, defaults to `False`): `MODEL.VITA.PRE_NORM`.
        object_encoder_window_size (`int`, defaults to 0): `MODEL.VITA.ENC_WINDOW_SIZE` (0 = attend over
            every frame query of the clip; GenVIS uses 0).
        object_enforce_input_projection (`bool`, defaults to `True`): `MODEL.VITA.ENFORCE_INPUT_PROJ`.
        use_similarity_heads (`bool`, defaults to `True`): `MODEL.VITA.SIM_WEIGHT > 0`; adds the training-only
            similarity embeddings of frame and clip queries.
        similarity_use_clip (`bool`, defaults to `True`): `MODEL.VITA.SIM_USE_CLIP`.
        clip_length (`int`, defaults to 1): `MODEL.GENVIS.LEN_CLIP_WINDOW` (1 = online, 3 = semi-online).
        size_divisibility (`int`, defaults to 32): `MODEL.MASK_FORMER.SIZE_DIVISIBILITY`; the model zero-pads each
            video group to a multiple of it.
        class_weight, mask_weight, dice_weight, no_object_weight: `MODEL.MASK_FORMER.*_WEIGHT` loss weights.
        object_no_object_weight: `MODEL.VITA.NO_OBJECT_WEIGHT`.
        similarity_weight: `MODEL.VITA.SIM_WEIGHT`.
        train_num_points, oversample_ratio, importance_sample_ratio: point-sampled mask losses.
        frame_deep_supervision / object_deep_supervision: `MODEL.MASK_FORMER.DEEP_SUPERVISION` /
            `MODEL.VITA.DEEP_SUPERVISION`.
        frame_queries_last_layers (`int`, defaults to 3): `MODEL.VITA.LAST_LAYER_NUM`, frame-decoder layers
            whose queries feed the object decoder during training.
        freeze_detector (`bool`, defaults to `True`): `MODEL.VITA.FREEZE_DETECTOR`; train only the object decoder.
        train_num_frames (`int`, defaults to 5): `INPUT.SAMPLING_FRAME_NUM`, frames per training sample.
        train_frame_range (`int`, defaults to 6): `INPUT.SAMPLING_FRAME_RANGE`.
        deformable_attention_backend (`str`, defaults to `"auto"`): `"auto"`, `"kernels"`, `"jit"` or `"torch"`.
    """

    model_type = "genvis"
    # Outputs `Trainer` leaves out of evaluation predictions (what post-processing needs stays; see
    # `genvis_hf.training.hf_trainer`).
    keys_to_ignore_at_inference = [
        "loss_dict", "clip_memory", "clip_queries_hidden_states", "propagated_queries", "memory_keys",
        "memory_values", "frame_queries", "backbone_hidden_states", "pixel_decoder_hidden_states",
    ]  # fmt: skip

    def __init__(
        self,
        # backbone
        backbone_type: str = "resnet",
        resnet_depth: int = 50,
        resnet_stem_out_channels: int = 64,
        resnet_res2_out_channels: int = 256,
        resnet_width_per_group: int = 64,
        resnet_num_groups: int = 1,
        resnet_stride_in_1x1: bool = False,
        resnet_res5_dilation: int = 1,
        resnet_norm: str = "FrozenBN",
        swin_embed_dim: int = 96,
        swin_depths: list[int] | tuple[int, ...] = (2, 2, 6, 2),
        swin_num_heads: list[int] | tuple[int, ...] = (3, 6, 12, 24),
        swin_window_size: int = 7,
        swin_mlp_ratio: float = 4.0,
        swin_qkv_bias: bool = True,
        swin_qk_scale: float | None = None,
        swin_patch_size: int = 4,
        swin_patch_norm: bool = True,
        swin_absolute_position_embedding: bool = False,
        swin_pretrain_image_size: int = 224,
        swin_drop_path_rate: float = 0.3,
        # pixel decoder
        pixel_decoder_dim: int = 256,
        mask_dim: int = 256,
        pixel_decoder_encoder_layers: int = 6,
        pixel_decoder_num_heads: int = 8,
        pixel_decoder_num_points: int = 4,
        pixel_decoder_ffn_dim: int = 1024,
        pixel_decoder_in_features: list[str] | tuple[str, ...] = ("res3", "res4", "res5"),
        pixel_decoder_dropout: float = 0.0,
        common_stride: int = 4,
        # frame decoder (Mask2Former)
        num_frame_queries: int = 100,
        frame_decoder_hidden_dim: int = 256,
        frame_decoder_layers: int = 9,
        frame_decoder_num_heads: int = 8,
        frame_decoder_ffn_dim: int = 2048,
        frame_decoder_pre_norm: bool = False,
        frame_decoder_enforce_input_projection: bool = False,
        # object encoder/decoder (VITA + GenVIS)
        num_clip_queries: int = 100,
        object_hidden_dim: int = 256,
        object_encoder_layers: int = 6,
        object_decoder_layers: int = 3,
        object_num_heads: int = 8,
        object_ffn_dim: int = 2048,
        object_pre_norm: bool = False,
        object_encoder_window_size: int = 0,
        object_enforce_input_projection: bool = True,
        use_similarity_heads: bool = True,
        similarity_use_clip: bool = True,
        # video inference
        clip_length: int = 1,
        size_divisibility: int = 32,
        # training
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        object_no_object_weight: float = 0.1,
        similarity_weight: float = 0.5,
        train_num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        frame_deep_supervision: bool = True,
        object_deep_supervision: bool = True,
        frame_queries_last_layers: int = 3,
        freeze_detector: bool = True,
        train_num_frames: int = 5,
        train_frame_range: int = 6,
        # kernels
        deformable_attention_backend: str = "auto",
        **kwargs: Any,
    ):
        moved = [key for key in PROCESSOR_FIELDS if key in kwargs]
        if moved:
            raise TypeError(
                f"GenVISConfig got {', '.join(moved)}: video-processor settings, not model ones; pass them to "
                "GenVISVideoProcessor (size={'shortest_edge': ..., 'longest_edge': ...}, image_mean, image_std, test_topk)"
            )
        if backbone_type not in _BACKBONE_TYPES:
            raise ValueError(f"backbone_type must be one of {_BACKBONE_TYPES}, got {backbone_type!r}")
        if deformable_attention_backend not in _DEFORMABLE_ATTENTION_BACKENDS:
            raise ValueError(
                f"deformable_attention_backend must be one of {_DEFORMABLE_ATTENTION_BACKENDS}, "
                f"got {deformable_attention_backend!r}"
            )
        if isinstance(clip_length, bool) or not isinstance(clip_length, int) or clip_length < 1:
            raise ValueError(f"clip_length must be an integer >= 1, got {clip_length!r}")
        _check_sizes(locals())
        if len(swin_depths) != len(swin_num_heads):
            raise ValueError("swin_depths and swin_num_heads must have the same length")
        if object_hidden_dim != frame_decoder_hidden_dim:
            # The object decoder's input projection is Linear(object_hidden_dim, object_hidden_dim) applied
            # to frame queries of width frame_decoder_hidden_dim, as in the original.
            raise ValueError("object_hidden_dim must equal frame_decoder_hidden_dim")

        self.backbone_type = backbone_type
        self.resnet_depth = resnet_depth
        self.resnet_stem_out_channels = resnet_stem_out_channels
        self.resnet_res2_out_channels = resnet_res2_out_channels
        self.resnet_width_per_group = resnet_width_per_group
        self.resnet_num_groups = resnet_num_groups
        self.resnet_stride_in_1x1 = resnet_stride_in_1x1
        self.resnet_res5_dilation = resnet_res5_dilation
        self.resnet_norm = resnet_norm
        self.swin_embed_dim = swin_embed_dim
        self.swin_depths = list(swin_depths)
        self.swin_num_heads = list(swin_num_heads)
        self.swin_window_size = swin_window_size
        self.swin_mlp_ratio = swin_mlp_ratio
        self.swin_qkv_bias = swin_qkv_bias
        self.swin_qk_scale = swin_qk_scale
        self.swin_patch_size = swin_patch_size
        self.swin_patch_norm = swin_patch_norm
        self.swin_absolute_position_embedding = swin_absolute_position_embedding
        self.swin_pretrain_image_size = swin_pretrain_image_size
        self.swin_drop_path_rate = swin_drop_path_rate

        self.pixel_decoder_dim = pixel_decoder_dim
        self.mask_dim = mask_dim
        self.pixel_decoder_encoder_layers = pixel_decoder_encoder_layers
        self.pixel_decoder_num_heads = pixel_decoder_num_heads
        self.pixel_decoder_num_points = pixel_decoder_num_points
        self.pixel_decoder_ffn_dim = pixel_decoder_ffn_dim
        self.pixel_decoder_in_features = list(pixel_decoder_in_features)
        self.pixel_decoder_dropout = pixel_decoder_dropout
        self.common_stride = common_stride

        self.num_frame_queries = num_frame_queries
        self.frame_decoder_hidden_dim = frame_decoder_hidden_dim
        self.frame_decoder_layers = frame_decoder_layers
        self.frame_decoder_num_heads = frame_decoder_num_heads
        self.frame_decoder_ffn_dim = frame_decoder_ffn_dim
        self.frame_decoder_pre_norm = frame_decoder_pre_norm
        self.frame_decoder_enforce_input_projection = frame_decoder_enforce_input_projection

        self.num_clip_queries = num_clip_queries
        self.object_hidden_dim = object_hidden_dim
        self.object_encoder_layers = object_encoder_layers
        self.object_decoder_layers = object_decoder_layers
        self.object_num_heads = object_num_heads
        self.object_ffn_dim = object_ffn_dim
        self.object_pre_norm = object_pre_norm
        self.object_encoder_window_size = object_encoder_window_size
        self.object_enforce_input_projection = object_enforce_input_projection
        self.use_similarity_heads = use_similarity_heads
        self.similarity_use_clip = similarity_use_clip

        self.clip_length = clip_length
        self.size_divisibility = size_divisibility

        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.no_object_weight = no_object_weight
        self.object_no_object_weight = object_no_object_weight
        self.similarity_weight = similarity_weight
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.frame_deep_supervision = frame_deep_supervision
        self.object_deep_supervision = object_deep_supervision
        self.frame_queries_last_layers = frame_queries_last_layers
        self.freeze_detector = freeze_detector
        self.train_num_frames = train_num_frames
        self.train_frame_range = train_frame_range

        self.deformable_attention_backend = deformable_attention_backend
        super().__init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """`PretrainedConfig.from_dict`, ignoring the processor settings that earlier config files carried."""
        moved = [key for key in PROCESSOR_FIELDS if key in config_dict]
        if moved:
            logger.info_once(
                f"GenVISConfig: ignoring {', '.join(moved)} (video-processor settings; see GenVISVideoProcessor)"
            )
            config_dict = {k: v for k, v in config_dict.items() if k not in PROCESSOR_FIELDS}
        return super().from_dict(config_dict, **kwargs)

    # ------------------------------------------------------------------ derived properties
    @property
    def num_classes(self) -> int:
        """Number of object classes (without the "no object" class)."""
        return self.num_labels

    @property
    def backbone_channels(self) -> list[int]:
        """Channels of the four backbone outputs res2..res5 (strides 4, 8, 16, 32)."""
        if self.backbone_type == "swin":
            return [self.swin_embed_dim * 2**i for i in range(len(self.swin_depths))]
        return [self.resnet_res2_out_channels * 2**i for i in range(4)]

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GenVISConfig:
        """Config of a released GenVIS model (see `genvis_hf.configuration.presets.PRESETS`).

        Example: `GenVISConfig.from_preset("genvis-swinl-ytvis19", clip_length=3)`.
        """
        from .presets import preset_config_kwargs

        kwargs = preset_config_kwargs(name)
        kwargs.update(overrides)
        return cls(**kwargs)
