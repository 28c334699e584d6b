"""PyTorch datasets over a `VideoDataset`: sampled, augmented training clips and whole test-size videos.

Both return `{"pixel_values": uint8 [T, 3, H, W], "labels": {...}}`; `GenVISDataCollator` normalises and pads.
Labels: `class_labels` long `[N]` (0-based), `masks` bool `[N, T, H, W]`, `instance_ids` long `[N]` (the
annotation ids), `video_id` long scalar, and (evaluation) `original_size` long `[2]` (height, width).
Frames are read from disk (PIL) only when a sample is asked for.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..evaluation.errors import YTVISFormatError
from ..processing.video_io import read_image
from ..processing.video_processing_genvis import resize_video, resized_shape
from ..utils.messages import one_line
from .transforms import ClipAugmentation, sample_frame_indices
from .ytvis import VideoDataset, decode_segmentation


def read_frame(path: str) -> np.ndarray:
    """A frame file as RGB uint8 `[H, W, 3]` (16-bit and other modes brought to 8 bits: `image_to_rgb`); raises
    `VideoInputError` naming the file when it cannot be read."""
    frame = read_image(path)
    return frame if frame.dtype == np.uint8 else np.clip(np.round(frame), 0, 255).astype(np.uint8)


def _instance_masks(row: dict, frame_indices: list[int], keep: list[int]) -> torch.Tensor:
    height, width = row["height"], row["width"]
    masks = np.zeros((len(keep), len(frame_indices), height, width), dtype=bool)
    for n, instance in enumerate(keep):
        segmentations = row["segmentations"][instance]
        for t, frame in enumerate(frame_indices):
            try:
                masks[n, t] = decode_segmentation(segmentations[frame], height, width)
            except Exception as error:  # pycocotools and json raise several types on a malformed segmentation
                raise YTVISFormatError(
                    f"video {row['video_id']}, annotation {row['instance_ids'][instance]}, frame {frame}: unusable "
                    f"segmentation ({one_line(error, 200)})"
                ) from error
    return torch.from_numpy(masks)


class VideoClipDataset(Dataset):
    """Training clips: for each video, `num_frames` frames sampled within `frame_range` of a random reference
    frame, augmented by clip (`ClipAugmentation`). Crowd instances are dropped.

    An item is asked for either by index (randomness from torch's global generator, so it works with any sampler
    and DataLoader workers, e.g. under `Trainer`) or by `(index, seed)`, which makes the sample a pure function
    of the seed (what `genvis_hf.training` uses for exact resumption).
    """

    def __init__(self, source: VideoDataset, num_frames: int, frame_range: int, augmentation: ClipAugmentation):
        self.source = source
        self.num_frames = num_frames
        self.frame_range = frame_range
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.source.videos)

    def __getitem__(self, key) -> dict:
        if isinstance(key, (tuple, list)):
            index, seed = int(key[0]), int(key[1])
        else:
            index, seed = int(key), int(torch.randint(0, 2**62, ()).item())
        rng = np.random.default_rng(seed)
        row = self.source.videos[index]
        if row["is_image"]:
            frame_indices = [0] * self.num_frames
        else:
            frame_indices = sample_frame_indices(row["length"], self.num_frames, self.frame_range, rng)
        keep = [n for n, crowd in enumerate(row["iscrowd"]) if not crowd]
        frames = [read_frame(row["file_names"][i]) for i in frame_indices]
        masks = _instance_masks(row, frame_indices, keep)
        video, masks = self.augmentation(frames, masks, rng, per_frame=row["is_image"])
        return {
            "pixel_values": video,
            "labels": {
                "class_labels": torch.tensor([row["labels"][n] for n in keep], dtype=torch.long),
                "masks": masks,
                "instance_ids": torch.tensor([row["instance_ids"][n] for n in keep], dtype=torch.long),
                "video_id": torch.tensor(row["video_id"], dtype=torch.long),
            },
        }


class VideoEvalDataset(Dataset):
    """Whole videos resized as at test time (short edge `shortest_edge`, long edge at most `longest_edge`), with
    their instances' masks at that size (for an evaluation loss) and `original_size` (for the metric)."""

    def __init__(self, source: VideoDataset, shortest_edge: int, longest_edge: int, with_masks: bool = True):
        self.source = source
        self.shortest_edge = shortest_edge
        self.longest_edge = longest_edge
        self.with_masks = with_masks

    def __len__(self) -> int:
        return len(self.source.videos)

    def __getitem__(self, index: int) -> dict:
        row = self.source.videos[int(index)]
        frame_indices = list(range(row["length"]))
        frames = torch.from_numpy(np.stack([read_frame(p) for p in row["file_names"]])).permute(0, 3, 1, 2)
        new_h, new_w = resized_shape(frames.shape[2], frames.shape[3], self.shortest_edge, self.longest_edge)
        video = resize_video(frames, new_h, new_w)
        keep = [n for n, crowd in enumerate(row["iscrowd"]) if not crowd] if self.with_masks else []
        masks = _instance_masks(row, frame_indices, keep)
        if masks.numel():
            masks = F.interpolate(masks.float(), size=(new_h, new_w), mode="nearest") > 0.5
        else:
            masks = torch.zeros((len(keep), len(frame_indices), new_h, new_w), dtype=torch.bool)
        return {
            "pixel_values": video,
            "labels": {
                "class_labels": torch.tensor([row["labels"][n] for n in keep], dtype=torch.long),
                "masks": masks,
                "instance_ids": torch.tensor([row["instance_ids"][n] for n in keep], dtype=torch.long),
                "video_id": torch.tensor(row["video_id"], dtype=torch.long),
                "original_size": torch.tensor([row["height"], row["width"]], dtype=torch.long),
            },
        }


class GenVISDataCollator:
    """Batches samples of the datasets above: `pixel_values` float `[B, T, 3, H, W]` (normalised with the video
    processor's mean/std, zero-padded to the batch's longest video and largest frame, rounded up to
    `size_divisibility`), `pixel_mask` long `[B, T, H, W]` (1 = real pixel) and `labels` (one dict per video; masks
    padded to H x W). Build it with `from_processor(processor)`, so that training normalises as inference does.
    """

    def __init__(self, image_mean=(123.675, 116.28, 103.53), image_std=(58.395, 57.12, 57.375),
                 size_divisibility: int = 32):  # fmt: skip
        self.image_mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.image_std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.size_divisibility = size_divisibility

    @classmethod
    def from_processor(cls, processor) -> GenVISDataCollator:
        """The collator normalising and padding as `processor` (a `GenVISVideoProcessor`) does."""
        return cls(list(processor.image_mean), list(processor.image_std), processor.size_divisibility)

    @classmethod
    def from_model_config(cls, config) -> GenVISDataCollator:
        """`from_processor` of the model's processor (`GenVISVideoProcessor.from_model_config(config)`)."""
        from ..processing.video_processing_genvis import GenVISVideoProcessor

        return cls.from_processor(GenVISVideoProcessor.from_model_config(config))

    def __call__(self, samples: list[dict]) -> dict:
        divisor = max(1, self.size_divisibility)
        frames = max(s["pixel_values"].shape[0] for s in samples)
        height = -(-max(s["pixel_values"].shape[2] for s in samples) // divisor) * divisor
        width = -(-max(s["pixel_values"].shape[3] for s in samples) // divisor) * divisor
        pixel_values = torch.zeros((len(samples), frames, 3, height, width), dtype=torch.float32)
        pixel_mask = torch.zeros((len(samples), frames, height, width), dtype=torch.long)
        labels = []
        for b, sample in enumerate(samples):
            video = sample["pixel_values"]
            t, _, h, w = video.shape
            pixel_values[b, :t, :, :h, :w] = (video.float() - self.image_mean) / self.image_std
            pixel_mask[b, :t, :h, :w] = 1
            label = dict(sample["labels"])
            masks = label["masks"]
            label["masks"] = F.pad(masks, (0, width - masks.shape[-1], 0, height - masks.shape[-2]))
            labels.append(label)
        return {"pixel_values": pixel_values, "pixel_mask": pixel_mask, "labels": labels}


__all__ = ["GenVISDataCollator", "VideoClipDataset", "VideoEvalDataset", "read_frame"]
