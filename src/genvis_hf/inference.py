"""Streaming video instance segmentation: any video length in bounded memory, with results identical to
`model(**processor(videos=[video]))` followed by `post_process_video_instance_segmentation`.

    frames (decoded one at a time) ─► chunk of whole W-frame clips ─► processor ─► model(chunk, clip_memory)
        ├─ per clip, kept in memory: class logits [cQ, K+1], mask embeddings [cQ, D]   (tiny)
        └─ per frame, spilled to a temporary file: mask features [D, H/4, W/4]          (the bulk)
    end of video ─► top-k over all clips ─► masks re-rendered clip by clip from the spill file,
                    RLE-encoded per frame ─► rescored scores

Why a spill file: the instances to keep are only known after the last clip, and their masks need every
frame's mask features. The original keeps all of them in (GPU) memory, so its memory grows with the video;
here memory stays flat and the features go to disk (`mask_dim x H/4 x W/4` float32 per frame, in a file without a
name, freed at the end or when the process dies).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from tqdm.auto import tqdm

from .modeling.modeling_genvis import GenVISPreTrainedModel
from .processing.post_processing import MaskRenderer, score_order, select_instances
from .processing.rle import masks_to_rle
from .processing.video_io import VideoReader


@dataclass
class VideoSegmentation:
    """Instances of one video, sorted by decreasing score.

    Attributes:
        name: the source's name (file stem, directory name, or "video").
        scores: float `[K]`; labels: int64 `[K]` (0-based class indices); label_names: `K` strings.
        segmentations: per instance, per frame, a COCO RLE dict (`{"size": [h, w], "counts": str}`).
        num_frames, height, width: frames segmented and mask size. fps: source frame rate when known.
        truncated: the source file ended before its announced duration (only with `allow_truncated`).
    """

    name: str
    scores: torch.Tensor
    labels: torch.Tensor
    label_names: list[str]
    segmentations: list[list[dict]]
    num_frames: int
    height: int
    width: int
    fps: float | None = None
    truncated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    def masks(self) -> torch.Tensor:
        """Decoded masks, bool `[K, T, height, width]` (memory grows with T: prefer `frame_masks`)."""
        if not self.segmentations:
            return torch.zeros((0, self.num_frames, self.height, self.width), dtype=torch.bool)
        return torch.stack([self.frame_masks(t) for t in range(self.num_frames)], dim=1)

    def frame_masks(self, frame: int) -> torch.Tensor:
        """bool `[K, height, width]` of one frame."""
        if not self.segmentations:
            return torch.zeros((0, self.height, self.width), dtype=torch.bool)
        decoded = mask_utils.decode([instance[frame] for instance in self.segmentations])  # [H, W, K]
        return torch.from_numpy(decoded).permute(2, 0, 1).bool()

    def to_ytvis_results(self, video_id: Any = None, label_to_category_id=None) -> list[dict]:
        """YouTube-VIS results entries (`video_id`, `category_id`, `score`, `segmentations`) plus `label`
        (the class name). Category ids default to label + 1."""
        video_id = self.name if video_id is None else video_id
        entries = []
        for score, label, segmentation in zip(self.scores.tolist(), self.labels.tolist(), self.segmentations):
            category = label_to_category_id[label] if label_to_category_id is not None else label + 1
            entries.append({"video_id": video_id, "category_id": int(category), "label": self.label_names[label],
                            "score": float(score), "segmentations": segmentation})  # fmt: skip
        return entries


class _FeatureSpill:
    """Append-only float32 store of per-frame mask features in a temporary file, read back by frame range.

    The file has no name (`tempfile.TemporaryFile`: O_TMPFILE, or unlinked as soon as created), so the OS
    reclaims its space when it is closed or the process dies, SIGKILL included."""

    def __init__(self, directory: str | None):
        # not a `with` block: the file lives as long as the spill (closed by close())
        self.file = tempfile.TemporaryFile(prefix="genvis-mask-features-", suffix=".f32", dir=directory)  # noqa: SIM115
        self.frame_shape: tuple[int, ...] | None = None
        self.frames = 0

    def append(self, features: torch.Tensor) -> None:
        """features: `[Tc, D, h, w]`."""
        array = features.detach().to("cpu", torch.float32).contiguous().numpy()
        self.frame_shape = self.frame_shape or tuple(array.shape[1:])
        self.file.seek(0, os.SEEK_END)
        self.file.write(array.tobytes())
        self.frames += array.shape[0]

    def read(self, start: int, count: int) -> torch.Tensor:
        frame_size = int(np.prod(self.frame_shape))
        self.file.seek(start * frame_size * 4)
        data = np.frombuffer(self.file.read(count * frame_size * 4), dtype=np.float32)
        return torch.from_numpy(data.copy()).view(count, *self.frame_shape)

    def close(self) -> None:
        self.file.close()


@torch.no_grad()
def segment_video(
    model,
    processor,
    source: Any,
    *,
    target_size: tuple[int, int] | None = None,
    threshold: float = 0.0,
    top_k: int | None = None,
    clip_length: int | None = None,
    max_frames: int | None = None,
    allow_truncated: bool = False,
    progress: bool = True,
    spill_dir: str | None = None,
) -> VideoSegmentation:
    """Segment and track the instances of one video, streaming it clip by clip.

    Args:
        model: `GenVISModel` or `GenVISForVideoInstanceSegmentation` (eval mode is set here).
        processor: its `GenVISVideoProcessor`.
        source: video file, frames directory, `[T, H, W, C]` / `[T, C, H, W]` array or tensor, or list of frames.
        target_size: `(height, width)` of the output masks; default: the source frames' size.
        threshold / top_k: as `post_process_video_instance_segmentation`.
        clip_length: frames per clip (default: the model's; 1 = online, 3 = semi-online).
        max_frames: segment only the first frames. allow_truncated: see `VideoReader`.
        progress: show a tqdm progress bar. spill_dir: directory of the temporary feature file.
    """
    model.eval()
    config = model.config
    clip_length = clip_length or config.clip_length
    top_k = top_k if top_k is not None else processor.test_topk
    reader = VideoReader(source, max_frames=max_frames, allow_truncated=allow_truncated)
    device = next(model.parameters()).device

    spill = _FeatureSpill(spill_dir)
    class_logits, mask_embeddings, clip_lengths = [], [], []
    memory, image_size, padded_size, source_size = None, None, None, None
    try:
        bar = tqdm(total=reader.num_frames_hint, desc=f"segmenting {reader.name}", unit="frame", disable=not progress)
        buffer: list[np.ndarray] = []

        # Whole clips per model call, cut where the in-memory forward cuts its backbone batches: same arithmetic.
        fast_path = GenVISPreTrainedModel.fast_path
        chunk_length = fast_path.chunk_length(model, clip_length) if fast_path is not None else clip_length

        def run_chunk(frames: list[np.ndarray]) -> None:
            nonlocal memory, image_size, padded_size
            inputs = processor(videos=[np.stack(frames)], return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(device, next(model.parameters()).dtype)
            outputs = model(pixel_values=pixel_values, pixel_mask=inputs["pixel_mask"].to(device),
                            clip_memory=memory, clip_length=clip_length)  # fmt: skip
            memory = outputs.clip_memory
            image_size = tuple(outputs.image_sizes[0].tolist())
            padded_size = tuple(outputs.padded_image_sizes[0].tolist())
            for clip in range(int(outputs.num_clips[0])):
                class_logits.append(outputs.class_queries_logits[0, clip].float().cpu())  # [cQ, K+1]
                mask_embeddings.append(outputs.mask_embeddings[0, clip].float().cpu())  # [cQ, D]
                clip_lengths.append(int(outputs.clip_lengths[0, clip]))
            spill.append(outputs.mask_features[0, :, :, : padded_size[0] // 4, : padded_size[1] // 4])
            bar.update(len(frames))

        for frame in reader:
            source_size = source_size or frame.shape[:2]
            buffer.append(frame)
            if len(buffer) == chunk_length:
                run_chunk(buffer)
                buffer = []
        if buffer:
            run_chunk(buffer)
        bar.close()

        target_size = tuple(target_size) if target_size is not None else tuple(source_size)
        selected = select_instances(torch.stack(class_logits), top_k)
        renderer = MaskRenderer(image_size, padded_size, target_size)
        segmentations: list[list[dict]] = [[] for _ in range(len(selected.scores))]
        start = 0
        for clip, length in enumerate(clip_lengths):
            masks = renderer.add_clip(mask_embeddings[clip][selected.queries], spill.read(start, length))
            start += length
            for instance, instance_masks in enumerate(masks):
                segmentations[instance].extend(masks_to_rle(instance_masks))
        scores = renderer.rescored(selected.scores)
    finally:
        spill.close()

    order = score_order(scores, threshold).tolist()
    names = [config.id2label.get(i, str(i)) for i in range(config.num_labels)]
    return VideoSegmentation(
        name=reader.name,
        scores=scores[order],
        labels=selected.labels[order],
        label_names=names,
        segmentations=[segmentations[i] for i in order],
        num_frames=sum(clip_lengths),
        height=target_size[0],
        width=target_size[1],
        fps=reader.fps,
        truncated=reader.truncated,
    )
