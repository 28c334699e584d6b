"""The `video-instance-segmentation` pipeline (registered on `import genvis_hf`).

    from transformers import pipeline
    segmenter = pipeline("video-instance-segmentation", model="path/to/genvis-model")
    instances = segmenter("video.mp4")            # or a frames directory, or a list of frames
    instances[0] -> {"score": 0.93, "label": "person", "label_id": 0, "segmentations": [T COCO RLEs]}
    genvis_hf.decode_masks(instances[0]["segmentations"]) -> bool [T, H, W]
    segmenter("video.mp4", return_rle=False)[0]["masks"] -> bool [T, H, W] (dense: T x H x W bytes per instance)

Compressed masks are the default so that memory stays flat whatever the video's length (segmentation itself
streams); dense masks of a five-minute 1080p video with 10 instances would need ~186 GB.
"""

from __future__ import annotations

from typing import Any

from transformers import Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .auto import AutoModelForVideoInstanceSegmentation
from .inference import segment_video
from .processing.video_processing_genvis import _is_frame


class VideoInstanceSegmentationPipeline(Pipeline):
    """Segment and track every object of a video with a GenVIS model, streaming it clip by clip.

    Call arguments: `threshold` (keep instances scoring above it, default 0: the model's top-k),
    `top_k`, `return_rle` (default True: per-frame COCO RLEs in `segmentations`, decoded by
    `genvis_hf.decode_masks`; False: dense bool `masks` `[T, H, W]`, which grow with the video), `clip_length`,
    `max_frames`, `target_size`, `allow_truncated`, `progress`.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = True

    def __call__(self, inputs: Any, **kwargs):
        """Segment one video (path, frames directory, array, or list of frames) or a list of videos (paths or
        arrays). A list whose items are single frames is one video, not a batch."""
        if isinstance(inputs, (list, tuple)) and inputs and all(_is_frame(item) for item in inputs):
            return super().__call__([list(inputs)], **kwargs)[0]
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, threshold=None, top_k=None, return_rle=None, clip_length=None, max_frames=None,
                             target_size=None, allow_truncated=None, progress=None, **kwargs):  # fmt: skip
        forward = {
            key: value
            for key, value in dict(
                threshold=threshold,
                top_k=top_k,
                clip_length=clip_length,
                max_frames=max_frames,
                target_size=target_size,
                allow_truncated=allow_truncated,
                progress=progress,
            ).items()
            if value is not None
        }
        postprocess = {"return_rle": return_rle} if return_rle is not None else {}
        return {}, forward, postprocess

    def preprocess(self, video: Any) -> dict[str, Any]:
        return {"video": video}

    def _forward(self, model_inputs: dict[str, Any], **options) -> dict[str, Any]:
        options.setdefault("progress", False)
        return {"segmentation": segment_video(self.model, self.video_processor, model_inputs["video"], **options)}

    def postprocess(self, model_outputs: dict[str, Any], return_rle: bool = True) -> list[dict[str, Any]]:
        segmentation = model_outputs["segmentation"]
        masks = None if return_rle else segmentation.masks()
        instances = []
        for index, (score, label) in enumerate(zip(segmentation.scores.tolist(), segmentation.labels.tolist())):
            instance = {"score": score, "label": segmentation.label_names[label], "label_id": label}
            if return_rle:
                instance["segmentations"] = segmentation.segmentations[index]
            else:
                instance["masks"] = masks[index]
            instances.append(instance)
        return instances


def register_pipeline() -> None:
    PIPELINE_REGISTRY.register_pipeline(
        "video-instance-segmentation",
        pipeline_class=VideoInstanceSegmentationPipeline,
        pt_model=AutoModelForVideoInstanceSegmentation,
        type="video",
    )
