"""The 12 released GenVIS models (seed Model Zoo) as config presets, plus their datasets' class names.

Preset names: `genvis-{r50,swinl}-{ytvis19,ytvis21,ovis}` (online, clip length 1) and the same with
`-semi-online` (clip length 3). Numbers are the seed repository's Model Zoo (github:miranheo/GenVIS README).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

YTVIS_2019_CLASSES = (
    "person", "giant_panda", "lizard", "parrot", "skateboard", "sedan", "ape", "dog", "snake", "monkey",
    "hand", "rabbit", "duck", "cat", "cow", "fish", "train", "horse", "turtle", "bear",
    "motorbike", "giraffe", "leopard", "fox", "deer", "owl", "surfboard", "airplane", "truck", "zebra",
    "tiger", "elephant", "snowboard", "boat", "shark", "mouse", "frog", "eagle", "earless_seal",
    "tennis_racket",
)  # fmt: skip
YTVIS_2021_CLASSES = (
    "airplane", "bear", "bird", "boat", "car", "cat", "cow", "deer", "dog", "duck",
    "earless_seal", "elephant", "fish", "flying_disc", "fox", "frog", "giant_panda", "giraffe", "horse",
    "leopard", "lizard", "monkey", "motorbike", "mouse", "parrot", "person", "rabbit", "shark",
    "skateboard", "snake", "snowboard", "squirrel", "surfboard", "tennis_racket", "tiger", "train",
    "truck", "turtle", "whale", "zebra",
)  # fmt: skip
OVIS_CLASSES = (
    "Person", "Bird", "Cat", "Dog", "Horse", "Sheep", "Cow", "Elephant", "Bear", "Zebra", "Giraffe",
    "Poultry", "Giant_panda", "Lizard", "Parrot", "Monkey", "Rabbit", "Tiger", "Fish", "Turtle",
    "Bicycle", "Motorcycle", "Airplane", "Boat", "Vehical",
)  # fmt: skip

# Dataset-level settings: class names (category_id = index + 1), top-k per video, training schedule.
DATASETS: dict[str, dict[str, Any]] = {
    "ytvis19": {"classes": YTVIS_2019_CLASSES, "test_topk": 10, "display_name": "YouTube-VIS 2019",
                "hub_dataset": "youtube_vis_2019"},
    "ytvis21": {"classes": YTVIS_2021_CLASSES, "test_topk": 10, "display_name": "YouTube-VIS 2021",
                "hub_dataset": "youtube_vis_2021"},
    "ovis": {"classes": OVIS_CLASSES, "test_topk": 20, "display_name": "OVIS", "hub_dataset": "ovis"},
}  # fmt: skip

# Backbone families: the fields that differ between R-50 and Swin-L models.
BACKBONES: dict[str, dict[str, Any]] = {
    "r50": {
        "backbone_type": "resnet",
        "resnet_depth": 50,
        "num_frame_queries": 100,
    },
    "swinl": {
        "backbone_type": "swin",
        "swin_embed_dim": 192,
        "swin_depths": [2, 2, 18, 2],
        "swin_num_heads": [6, 12, 24, 48],
        "swin_window_size": 12,
        "swin_pretrain_image_size": 384,
        "num_frame_queries": 200,
    },
}
# Test-time resize of each family (`INPUT.MIN_SIZE_TEST` / `MAX_SIZE_TEST`): video-processor settings.
TEST_SIZES: dict[str, dict[str, int]] = {
    "r50": {"shortest_edge": 360, "longest_edge": 1333},
    "swinl": {"shortest_edge": 448, "longest_edge": 1333},
}

MODES: dict[str, dict[str, Any]] = {
    "online": {"clip_length": 1, "train_num_frames": 5, "train_frame_range": 6},
    "semi-online": {"clip_length": 3, "train_num_frames": 15, "train_frame_range": 12},
}


@dataclass(frozen=True)
class ModelZooEntry:
    """One released checkpoint: its seed numbers (YouTube-VIS API, in %) and download link."""

    preset: str
    backbone: str
    mode: str
    dataset: str
    original_config: str
    ap: float
    ap50: float
    ap75: float
    ar1: float
    ar10: float
    download_url: str
    metrics: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "metrics", {"AP": self.ap, "AP50": self.ap50, "AP75": self.ap75, "AR1": self.ar1, "AR10": self.ar10}
        )


def _gdrive(file_id: str) -> str:
    return f"https://drive.google.com/file/d/{file_id}/view?usp=share_link"


_ORIGINAL_DIRS = {"ytvis19": "youtubevis_2019", "ytvis21": "youtubevis_2021", "ovis": "ovis"}
_ORIGINAL_BACKBONES = {"r50": "R50", "swinl": "SWIN"}


def _entry(backbone: str, mode: str, dataset: str, numbers: tuple[float, ...], file_id: str) -> ModelZooEntry:
    suffix = "" if mode == "online" else "-semi-online"
    original_mode = mode.replace("-", "_")
    return ModelZooEntry(
        preset=f"genvis-{backbone}-{dataset}{suffix}",
        backbone=backbone,
        mode=mode,
        dataset=dataset,
        original_config=(
            f"configs/genvis/{_ORIGINAL_DIRS[dataset]}/genvis_{_ORIGINAL_BACKBONES[backbone]}_bs8_{original_mode}.yaml"
        ),
        ap=numbers[0],
        ap50=numbers[1],
        ap75=numbers[2],
        ar1=numbers[3],
        ar10=numbers[4],
        download_url=_gdrive(file_id),
    )


MODEL_ZOO: dict[str, ModelZooEntry] = {
    e.preset: e
    for e in (
        _entry("r50", "online", "ytvis19", (50.0, 71.5, 54.6, 49.5, 59.7), "1WdDsE4EGAuYQ1hqLB4XtZoYO0iSehnZo"),
        _entry("r50", "semi-online", "ytvis19", (51.3, 72.0, 57.8, 49.5, 60.0), "1yQVzuFFrHsRDd96ywMsGLTDwVqKShFZt"),
        _entry("swinl", "online", "ytvis19", (64.0, 84.9, 68.3, 56.1, 69.4), "1TZvH5qlhTnZ6WXk1oNmCmYz_cq1m5AuO"),
        _entry("swinl", "semi-online", "ytvis19", (63.8, 85.7, 68.5, 56.3, 68.4), "1PTtkH-Angrw92D7P7-BXvtAQZ8nWmJ6Q"),
        _entry("r50", "online", "ytvis21", (47.1, 67.5, 51.5, 41.6, 54.7), "1-WcWxoBRBIAyxhH0-1X2ywe1bquOWjkO"),
        _entry("r50", "semi-online", "ytvis21", (46.3, 67.0, 50.2, 40.6, 53.2), "1AMqKe9OX-wsr39RUxggTwPY25cvABoub"),
        _entry("swinl", "online", "ytvis21", (59.6, 80.9, 65.8, 48.7, 65.0), "1cHEfYb6QLGllR1i2xvL-AZnrthKx3wbV"),
        _entry("swinl", "semi-online", "ytvis21", (60.1, 80.9, 66.5, 49.1, 64.7), "1Nl8bE5JXFdLSoABrvNax_rrnLrt0ZSNc"),
        _entry("r50", "online", "ovis", (35.8, 60.8, 36.2, 16.3, 39.6), "15Iitl2sSmAxFXT-PJCYfY37vcc7_iEO7"),
        _entry("r50", "semi-online", "ovis", (34.5, 59.4, 35.0, 16.6, 38.3), "1Y8d0ETmW3XoD-zGxvZNRVvlz1jTsXY5a"),
        _entry("swinl", "online", "ovis", (45.2, 69.1, 48.4, 19.1, 48.6), "11aqfoqDoyEIDcDmYqcWDEX3FK7ChIRks"),
        _entry("swinl", "semi-online", "ovis", (45.4, 69.2, 47.8, 18.9, 49.0), "17uErrcAZ6-5ewdzUy9CxDK6tjOe5Xp93"),
    )
}

PRESETS: tuple[str, ...] = tuple(MODEL_ZOO)


def label_names(dataset: str) -> tuple[str, ...]:
    """Class names of a data set key (`ytvis19`, `ytvis21`, `ovis`), in contiguous-label order."""
    return DATASETS[dataset]["classes"]


# `genvis-tiny`: a GenVIS small enough to train from scratch on a 2-core CPU in minutes (1.2 M parameters,
# 4.8 MB of float32 weights). Same architecture, scaled down: ResNet-18 (basic blocks) with 16/32/64/128 channels
# (detectron2's R-18 has res2 = 64; here a 1x1 projection shortcut bridges stem and res2 as in every other stage)
# and trainable GroupNorm instead of frozen batch norm (a backbone trained from scratch needs a real norm),
# 64-wide pixel/frame/object decoders with 4 heads, 2 deformable encoder layers, 3 frame-decoder layers (4 heads,
# so `frame_queries_last_layers` 3 = every layer's queries), 20 frame queries, 10 clip queries, 2+2 object
# encoder/decoder layers. Trained end to end (`freeze_detector` False: there is no pretrained detector to keep),
# on small frames (test short edge 128; `genvis-hf train` adapts it to the data set), with 512 sampled points
# (a 128 x 170 input has 32 x 43 stride-4 mask logits). Online (clip length 1), 3 frames per training sample
# (the original takes 5; in a CPU budget of minutes, more optimiser steps on more videos learn faster).
TINY_PRESET = "genvis-tiny"
TINY_CONFIG: dict[str, Any] = {
    "backbone_type": "resnet",
    "resnet_depth": 18,
    "resnet_stem_out_channels": 16,
    "resnet_res2_out_channels": 16,
    "resnet_norm": "GN",
    "pixel_decoder_dim": 64,
    "mask_dim": 64,
    "pixel_decoder_encoder_layers": 2,
    "pixel_decoder_num_heads": 4,
    "pixel_decoder_ffn_dim": 128,
    "num_frame_queries": 20,
    "frame_decoder_hidden_dim": 64,
    "frame_decoder_layers": 3,
    "frame_decoder_num_heads": 4,
    "frame_decoder_ffn_dim": 128,
    "num_clip_queries": 10,
    "object_hidden_dim": 64,
    "object_encoder_layers": 2,
    "object_decoder_layers": 2,
    "object_num_heads": 4,
    "object_ffn_dim": 128,
    "clip_length": 1,
    "train_num_points": 512,
    "freeze_detector": False,
    "train_num_frames": 3,
    "train_frame_range": 6,
}
TINY_PROCESSOR: dict[str, Any] = {"size": {"shortest_edge": 128, "longest_edge": 400}, "test_topk": 10}


def preset_config_kwargs(name: str) -> dict[str, Any]:
    """`GenVISConfig` keyword arguments of a released model (or of `genvis-tiny`, which has no released weights
    and whose classes come from the training data); raises `KeyError` naming the valid presets."""
    if name == TINY_PRESET:
        return dict(TINY_CONFIG)
    if name not in MODEL_ZOO:
        raise KeyError(f"Unknown GenVIS preset {name!r}; available: {', '.join(PRESETS)}, {TINY_PRESET}")
    entry = MODEL_ZOO[name]
    dataset = DATASETS[entry.dataset]
    classes = dataset["classes"]
    return {
        **BACKBONES[entry.backbone],
        **MODES[entry.mode],
        "id2label": dict(enumerate(classes)),
        "label2id": {c: i for i, c in enumerate(classes)},
    }


def preset_processor_kwargs(name: str) -> dict[str, Any]:
    """`GenVISVideoProcessor` keyword arguments of a preset: the family's test resize and the data set's top-k."""
    if name == TINY_PRESET:
        return {"size": dict(TINY_PROCESSOR["size"]), "test_topk": TINY_PROCESSOR["test_topk"]}
    if name not in MODEL_ZOO:
        raise KeyError(f"Unknown GenVIS preset {name!r}; available: {', '.join(PRESETS)}, {TINY_PRESET}")
    entry = MODEL_ZOO[name]
    return {"size": dict(TEST_SIZES[entry.backbone]), "test_topk": DATASETS[entry.dataset]["test_topk"]}
