"""GenVIS video processor: resize (detectron2's test-time `ResizeShortestEdge`), normalise, pad to a multiple
of 32 and batch videos; post-process model outputs into per-video instances (scores, labels, masks)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .post_processing import MaskRenderer, score_order, select_instances
from .rle import masks_to_rle
from .video_io import VideoInputError, VideoReader, read_video

DEFAULT_MEAN = [123.675, 116.28, 103.53]
DEFAULT_STD = [58.395, 57.12, 57.375]


class GenVISVideoProcessorKwargs(VideosKwargs, total=False):
    """Keyword arguments of `GenVISVideoProcessor.__call__` beyond transformers' video ones."""

    do_pad: bool
    size_divisibility: int
    test_topk: int


def resized_shape(height: int, width: int, shortest_edge: int, longest_edge: int) -> tuple[int, int]:
    """detectron2 `ResizeShortestEdge.get_output_shape`: scale the short side to `shortest_edge` unless the
    long side would exceed `longest_edge`; round half up. Returns (new_height, new_width)."""
    size = shortest_edge * 1.0
    scale = size / min(height, width)
    new_h, new_w = (size, scale * width) if height < width else (scale * height, size)
    if max(new_h, new_w) > longest_edge:
        scale = longest_edge * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_video(video: torch.Tensor, new_height: int, new_width: int) -> torch.Tensor:
    """Resize `[T, C, H, W]` like detectron2's `ResizeTransform`: PIL bilinear per frame for uint8, else
    `F.interpolate(bilinear, align_corners=False)`."""
    if video.shape[-2:] == (new_height, new_width):
        return video
    if video.dtype == torch.uint8:
        frames = []
        for frame in video.permute(0, 2, 3, 1).cpu().numpy():  # [H, W, C]
            image = Image.fromarray(frame[:, :, 0], mode="L") if frame.shape[2] == 1 else Image.fromarray(frame)
            resized = np.asarray(image.resize((new_width, new_height), Image.BILINEAR))
            frames.append(resized[:, :, None] if resized.ndim == 2 else resized)
        return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).to(video.device)
    return F.interpolate(video.float(), size=(new_height, new_width), mode="bilinear", align_corners=False)


def _is_frame(item: Any) -> bool:
    """A single image (PIL, or a 2-D/3-D array or tensor), as opposed to a video."""
    return isinstance(item, Image.Image) or (isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim in (2, 3))


def split_videos(videos: Any) -> list[Any]:
    """The videos of a processor call: a path, a `[T, ...]` array/tensor or a list of frames is one video; a
    list of those is a batch."""
    if isinstance(videos, (str, os.PathLike)) or (isinstance(videos, (np.ndarray, torch.Tensor)) and videos.ndim == 4):
        return [videos]
    if isinstance(videos, (list, tuple)):
        if len(videos) == 0:
            raise VideoInputError("no videos given")
        if all(_is_frame(item) for item in videos):
            return [list(videos)]
        return list(videos)
    raise VideoInputError(f"unsupported videos input of type {type(videos).__name__}")


def _is_video_file(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike)) and Path(source).is_file()


def _metadata_list(video_metadata: Any, count: int) -> list[dict | None]:
    """`video_metadata` (None, one dict / `VideoMetadata`, or one per video) as one plain dict (or None) per video."""
    if video_metadata is None:
        return [None] * count
    entries = list(video_metadata) if isinstance(video_metadata, (list, tuple)) else [video_metadata]
    if len(entries) != count:
        raise ValueError(f"video_metadata has {len(entries)} entries for {count} videos: give one per video")
    plain = []
    for entry in entries:
        if not isinstance(entry, (dict, VideoMetadata)):
            raise TypeError(f"video_metadata entries must be dicts or VideoMetadata, got {type(entry).__name__}")
        plain.append({key: entry[key] for key in entry if entry[key] is not None})
    return plain


def _load_video(source: Any, given: dict | None, sample_indices_fn) -> tuple[np.ndarray, VideoMetadata]:
    """One video's RGB frames `[T, H, W, 3]` and its metadata, sampled by `sample_indices_fn` when given.

    A video file goes through transformers' public loader, `load_video` (PyAV backend), with its frame count taken
    by demuxing rather than from the header (`VideoReader.count_file_frames`); frame directories and in-memory frames are read by `VideoReader`, with
    `given` (the caller's `video_metadata`, e.g. its `fps`) filling in what they lack."""
    if _is_video_file(source):
        from transformers.video_utils import load_video

        # one-line errors for a missing, empty, unreadable or truncated file; the frame count from the packets
        count = VideoReader(source).count_file_frames()

        def sample(metadata: VideoMetadata, **kwargs) -> np.ndarray:
            metadata.total_num_frames = count
            metadata.duration = count / metadata.fps if metadata.fps else None
            return sample_indices_fn(metadata=metadata) if sample_indices_fn is not None else np.arange(count)

        try:
            frames, metadata = load_video(str(source), backend="pyav", sample_indices_fn=sample)
        except Exception as error:  # av decoding errors of a damaged file
            raise VideoInputError(f"{source}: decoding failed ({type(error).__name__}: {str(error)[:200]})") from error
        decoded = len(frames) if frames.ndim == 4 else 0
        missing = list(metadata.frames_indices[decoded:])  # the loader stops at the end of the stream
        # A file can hold a packet or two that decode to no frame at its very end (box.mp4: 456 packets, 455
        # frames); more missing frames mean a damaged or truncated file, as `VideoReader` judges it.
        if decoded == 0 or (missing and min(missing) < count - max(2, round(0.02 * count))):
            raise VideoInputError(f"{source}: decoded {decoded} of the {len(metadata.frames_indices)} frames requested "
                                  f"of its {count} (damaged or truncated file)")  # fmt: skip
        if missing:
            metadata.frames_indices = list(metadata.frames_indices[:decoded])
            if sample_indices_fn is None:
                metadata.total_num_frames = decoded
        return frames, metadata
    frames = read_video(source)
    fields = {"total_num_frames": len(frames), **(given or {})}
    if fields["total_num_frames"] != len(frames):
        raise ValueError(f"video_metadata says {fields['total_num_frames']} frames, the video has {len(frames)}")
    metadata = VideoMetadata(**{**fields, "height": frames.shape[1], "width": frames.shape[2]})
    indices = np.arange(len(frames))
    if sample_indices_fn is not None:
        indices = np.asarray(sample_indices_fn(metadata=metadata))
        if indices.size == 0:
            raise ValueError(f"frame sampling kept none of the video's {len(frames)} frames")
        frames = frames[indices]
    metadata.frames_indices = indices.tolist()
    return frames, metadata


class GenVISVideoProcessor(BaseVideoProcessor):
    r"""Prepares videos for [`GenVISForVideoInstanceSegmentation`] and post-processes its outputs.

    `processor(videos=[video, ...], return_tensors="pt")` returns `pixel_values` `[B, T, 3, H, W]` (float32,
    normalised, zero-padded bottom/right to a common multiple of `size_divisibility`) and `pixel_mask`
    `[B, T, H, W]` (1 on real pixels of real frames). A video is a `[T, H, W, C]` / `[T, C, H, W]` array or
    tensor (uint8 0-255 or float on the 0-255 scale, RGB), a list of frames, or a file path.

    Args:
        do_resize (`bool`, defaults to `True`): resize so the short side is `size["shortest_edge"]` (360 for R-50
            models, 448 for Swin-L) and the long side at most `size["longest_edge"]` (1333), like the original's
            test-time resize (PIL bilinear on uint8 frames).
        do_normalize (`bool`, defaults to `True`): `(x - image_mean) / image_std` on the 0-255 scale.
        do_pad (`bool`, defaults to `True`): pad to a multiple of `size_divisibility` (32).
        test_topk (`int`, defaults to 10): instances kept per video by post-processing.
    """

    resample = PILImageResampling.BILINEAR
    image_mean = DEFAULT_MEAN
    image_std = DEFAULT_STD
    size = {"shortest_edge": 360, "longest_edge": 1333}
    default_to_square = False
    do_resize = True
    do_center_crop = False
    do_rescale = False
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = False
    do_pad = True
    size_divisibility = 32
    test_topk = 10
    valid_kwargs = GenVISVideoProcessorKwargs
    model_input_names = ["pixel_values", "pixel_mask"]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._check_values()

    def _check_values(self) -> None:
        """Raise ValueError naming the first pre/post-processing value out of range (a bad processor file fails here,
        not deep inside a video)."""
        for name in ("test_topk", "size_divisibility"):
            value = getattr(self, name, None)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        size = getattr(self, "size", None) or {}
        for key in ("shortest_edge", "longest_edge"):
            value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"size[{key!r}] must be an integer >= 1, got {value!r}")
        for name in ("image_mean", "image_std"):
            values = getattr(self, name, None)
            if values is not None and len(values) != 3:
                raise ValueError(f"{name} must have 3 values (R, G, B), got {list(values)}")
        if getattr(self, "image_std", None) is not None and any(not std > 0 for std in self.image_std):
            raise ValueError(f"image_std must be positive, got {list(self.image_std)}")

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> GenVISVideoProcessor:
        """The processor of a released model (`genvis_hf.configuration.presets`): its family's test resize (R-50
        shortest edge 360, Swin-L 448, longest edge 1333) and its data set's top-k (YouTube-VIS 10, OVIS 20)."""
        from ..configuration.presets import preset_processor_kwargs

        return cls(**{**preset_processor_kwargs(name), **kwargs})

    @classmethod
    def from_model_config(cls, config, **kwargs) -> GenVISVideoProcessor:
        """The processor for the model `config` belongs to: the one saved with it (`config.name_or_path`, the
        directory or installed name `from_pretrained` read, looked up offline), else the default processor with the
        config's size divisibility. The processor is where resize, normalisation and top-k values live; the
        model config has none of them."""
        source = str(getattr(config, "name_or_path", "") or "")
        if source:
            try:
                return cls.from_pretrained(source, local_files_only=True, **kwargs)
            except (OSError, ValueError):
                pass  # a model built in memory, or saved without its processor
        return cls(size_divisibility=config.size_divisibility, **kwargs)

    # ------------------------------------------------------------------ input handling
    def _decode_and_sample_videos(self, videos, video_metadata=None, do_sample_frames=None, sample_indices_fn=None):
        """`BaseVideoProcessor`'s decoding step for every input GenVIS takes (see `split_videos`): video files are
        decoded with transformers' public loader (`transformers.video_utils.load_video`, PyAV backend), frame
        directories, arrays, tensors and frame lists with `genvis_hf`'s reader. With `do_sample_frames`, the frames
        `sample_frames` picks (`num_frames` or `fps`; `fps` needs a frame rate: a file's own, or `video_metadata`)
        are kept. Returns the videos `[T, 3, H, W]` and one `VideoMetadata` per video (`return_metadata=True`)."""
        sources = split_videos(videos)
        given = _metadata_list(video_metadata, len(sources))
        decoded, metadata = [], []
        for source, video_meta in zip(sources, given):
            frames, video_meta = _load_video(source, video_meta, sample_indices_fn if do_sample_frames else None)
            decoded.append(torch.from_numpy(frames).permute(0, 3, 1, 2))
            metadata.append(video_meta)
        return decoded, metadata

    def _prepare_input_videos(self, videos, do_convert_rgb=None, input_data_format=None, device=None):
        return [video.to(device) for video in videos] if device is not None else videos

    # ------------------------------------------------------------------ pre-processing
    def _preprocess(
        self,
        videos: list[torch.Tensor],
        do_resize: bool,
        size: Any,
        do_normalize: bool,
        image_mean: list[float],
        image_std: list[float],
        do_pad: bool | None = None,
        size_divisibility: int | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        do_pad = self.do_pad if do_pad is None else do_pad
        divisor = (self.size_divisibility if size_divisibility is None else size_divisibility) if do_pad else 1
        processed = []
        for index, video in enumerate(videos):
            if video.dim() != 4 or video.shape[1] != 3:
                raise ValueError(
                    f"video {index}: expected frames [T, 3, H, W] after RGB conversion, got {tuple(video.shape)}"
                )
            if video.shape[0] == 0:
                raise ValueError(f"video {index} has no frames")
            if do_resize:
                new_h, new_w = resized_shape(video.shape[2], video.shape[3], size.shortest_edge, size.longest_edge)
                video = resize_video(video, new_h, new_w)
            video = video.float()
            if do_normalize:
                mean = torch.tensor(image_mean, dtype=torch.float32, device=video.device).view(1, -1, 1, 1)
                std = torch.tensor(image_std, dtype=torch.float32, device=video.device).view(1, -1, 1, 1)
                video = (video - mean) / std
            processed.append(video)

        num_frames = max(v.shape[0] for v in processed)
        height = math.ceil(max(v.shape[2] for v in processed) / divisor) * divisor
        width = math.ceil(max(v.shape[3] for v in processed) / divisor) * divisor
        pixel_values = processed[0].new_zeros((len(processed), num_frames, 3, height, width))
        pixel_mask = torch.zeros((len(processed), num_frames, height, width), dtype=torch.long)
        for b, video in enumerate(processed):
            t, _, h, w = video.shape
            pixel_values[b, :t, :, :h, :w] = video
            pixel_mask[b, :t, :h, :w] = 1
        return BatchFeature(data={"pixel_values": pixel_values, "pixel_mask": pixel_mask}, tensor_type=return_tensors)

    # ------------------------------------------------------------------ post-processing
    def post_process_video_instance_segmentation(
        self,
        outputs,
        target_sizes: list[tuple[int, int]] | torch.Tensor | None = None,
        threshold: float = 0.0,
        top_k: int | None = None,
        return_rle: bool = False,
    ) -> list[dict[str, Any]]:
        """Per-video instances, computed as the original GenVIS inference does.

        For each video: softmax over classes (no-object dropped), max over clips per (query, class), top-k of
        the flattened `[cQ * K]` table (a query may appear with several labels); each selected query's mask on
        every frame = its clip's mask embedding x the frame's mask features, bilinearly upsampled to the padded
        input size, cropped, rescored (score x mean foreground probability over all frames), resized to the
        target size and thresholded at 0.

        Args:
            outputs: [`GenVISModelOutput`].
            target_sizes: `(height, width)` of each video's output masks (the original frame size); defaults to
                the model-input size of each video.
            threshold: keep instances with score > threshold (0 keeps all top-k, as the original).
            top_k: instances per video before thresholding; defaults to the processor's `test_topk` (the model
                config's `TEST.DETECTIONS_PER_IMAGE`: 10 for YouTube-VIS, 20 for OVIS).
            return_rle: add `segmentations`: per instance, per frame a COCO RLE dict (`counts` as str).

        Returns:
            One dict per video, instances sorted by decreasing score: `scores` float `[K]`, `labels` int64 `[K]`
            (0-based), `masks` bool `[K, T, height, width]`, `queries` int64 `[K]` (the clip query that tracks the
            instance; one query may carry several labels) and, with `return_rle`, `segmentations`.
        """
        top_k = top_k if top_k is not None else self.test_topk
        results = []
        batch = outputs.class_queries_logits.shape[0]
        if target_sizes is not None and len(target_sizes) != batch:
            raise ValueError(f"target_sizes has {len(target_sizes)} entries for a batch of {batch} videos")
        for b in range(batch):
            target = (
                tuple(int(s) for s in target_sizes[b])
                if target_sizes is not None
                else tuple(outputs.image_sizes[b].tolist())
            )
            results.append(self._post_process_video(outputs, b, target, threshold, top_k, return_rle))
        return results

    def _post_process_video(self, outputs, b: int, target_size, threshold: float, top_k: int, return_rle: bool):
        num_clips = int(outputs.num_clips[b])
        num_frames = int(outputs.video_lengths[b])
        padded_size = tuple(outputs.padded_image_sizes[b].tolist())
        # float32 whatever the model ran in (bf16 models included), as the original post-processing
        selected = select_instances(outputs.class_queries_logits[b, :num_clips].float(), top_k)
        renderer = MaskRenderer(tuple(outputs.image_sizes[b].tolist()), padded_size, target_size)
        features = outputs.mask_features[b, :num_frames, :, : padded_size[0] // 4, : padded_size[1] // 4].float()
        # [k, T, out_h, out_w], written clip by clip
        masks = torch.empty((len(selected.queries), num_frames, *target_size), dtype=torch.bool, device=features.device)
        start = 0
        for clip, length in enumerate(outputs.clip_lengths[b, :num_clips].tolist()):
            embeddings = outputs.mask_embeddings[b, clip, selected.queries].float()  # [k, D]
            renderer.add_clip(embeddings, features[start : start + length], out=masks[:, start : start + length])
            start += length
        scores = renderer.rescored(selected.scores)
        order = score_order(scores, threshold)
        result = {
            "scores": scores[order].cpu(),
            "labels": selected.labels[order].cpu(),
            "masks": masks[order].cpu(),  # [k, T, out_h, out_w]
            "queries": selected.queries[order].cpu(),
        }
        if return_rle:
            result["segmentations"] = [masks_to_rle(instance) for instance in result["masks"]]
        return result


__all__ = ["GenVISVideoProcessor", "resize_video", "resized_shape"]
