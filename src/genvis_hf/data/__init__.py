"""Training and evaluation data: YouTube-VIS/OVIS (and COCO pseudo-video) loading on `datasets`, clip sampling and
per-clip augmentation, the batch collator, and the synthetic shapes data set."""

from .dataset import GenVISDataCollator, VideoClipDataset, VideoEvalDataset
from .synthetic import make_synthetic_dataset
from .transforms import ClipAugmentation, default_train_sizes, sample_frame_indices
from .ytvis import VideoDataset, decode_segmentation, load_coco_as_videos, load_ytvis

__all__ = [
    "ClipAugmentation",
    "GenVISDataCollator",
    "VideoClipDataset",
    "VideoDataset",
    "VideoEvalDataset",
    "decode_segmentation",
    "default_train_sizes",
    "load_coco_as_videos",
    "load_ytvis",
    "make_synthetic_dataset",
    "sample_frame_indices",
]
