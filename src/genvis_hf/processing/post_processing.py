"""GenVIS video post-processing, split so that the in-memory path (`post_process_video_instance_segmentation`)
and the streaming path (`genvis_hf.inference`) run the very same arithmetic:

1. `select_instances`: softmax over classes (no-object dropped), max over clips per (query, class), top-k of
   the flattened `[cQ * K]` table -> scores, labels, query indices (a query may carry several labels).
2. `MaskRenderer.add_clip`, once per clip in order: the selected queries' masks on the clip's frames
   (mask embedding x mask features at stride 4 -> bilinear to the padded input size -> crop -> bilinear to the
   target size -> > 0), while accumulating the rescoring sums over every frame.
3. `MaskRenderer.rescored(scores)`: score x sum(p * [p > 0.5]) / (sum([p > 0.5]) + 1e-6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class SelectedInstances:
    """Top-k (query, class) pairs of one video. Every tensor is `[k]`."""

    scores: torch.Tensor  # before rescoring
    labels: torch.Tensor  # 0-based class index
    queries: torch.Tensor  # clip-query index


def select_instances(class_logits: torch.Tensor, top_k: int) -> SelectedInstances:
    """class_logits: `[num_clips, cQ, K + 1]` of one video (no-object last)."""
    num_classes = class_logits.shape[-1] - 1
    scores = F.softmax(class_logits, dim=-1)[:, :, :-1].max(dim=0).values  # [cQ, K]
    scores, flat = scores.flatten().topk(min(top_k, scores.numel()), sorted=False)
    return SelectedInstances(
        scores=scores, labels=flat % num_classes, queries=torch.div(flat, num_classes, rounding_mode="floor")
    )


class MaskRenderer:
    """Renders the selected queries' masks clip by clip and accumulates the rescoring sums.

    Args:
        image_size: `(height, width)` of the unpadded model input.
        padded_size: that size padded to the size divisibility (masks are upsampled to it, then cropped).
        target_size: `(height, width)` of the returned masks.
    """

    def __init__(self, image_size: tuple[int, int], padded_size: tuple[int, int], target_size: tuple[int, int]):
        self.image_size = tuple(int(s) for s in image_size)
        self.padded_size = tuple(int(s) for s in padded_size)
        self.target_size = tuple(int(s) for s in target_size)
        self.numerator: torch.Tensor | None = None
        self.denominator: torch.Tensor | None = None

    def add_clip(self, mask_embeddings: torch.Tensor, mask_features: torch.Tensor,
                 out: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """
        Args:
            mask_embeddings: `[k, D]`, the selected queries' embeddings of this clip.
            mask_features: `[Tc, D, H/4, W/4]` of the clip's frames (the video's own padded size / 4).
            out: optional bool `[k, Tc, target_h, target_w]` to write the masks into (e.g. the clip's frames of
                a whole-video tensor, which saves concatenating the clips afterwards).

        Returns:
            bool `[k, Tc, target_h, target_w]` (`out` when given).
        """
        height, width = self.image_size
        # One memory layout whatever the caller holds (channels-last model output, or a contiguous copy from
        # the streaming spill file): the product's rounding, hence every mask pixel, is then the same.
        mask_features = mask_features.contiguous()
        logits = torch.einsum("qc,tchw->qthw", mask_embeddings.contiguous(), mask_features)
        logits = F.interpolate(logits, size=self.padded_size, mode="bilinear", align_corners=False)
        logits = logits[:, :, :height, :width]  # [k, Tc, H, W]
        soft = logits.sigmoid().flatten(1)  # [k, Tc * H * W]
        # The foreground indicator as 0./1. floats (comparing into a float tensor is one pass, where a bool mask
        # would be converted when multiplied and summed): the products soft * 1. and soft * 0. and so the sums are
        # the same.
        hard = torch.gt(soft, 0.5, out=torch.empty_like(soft))
        if self.numerator is None:  # float32 accumulators, as the original (its rounding included)
            self.numerator = torch.zeros(logits.shape[0], dtype=torch.float32, device=logits.device)
            self.denominator = torch.zeros(logits.shape[0], dtype=torch.float32, device=logits.device)
        self.numerator += (soft * hard).sum(1)
        # a count of ones is exact in float32 below 2**24 pixels a row, in float64 beyond
        count_dtype = torch.float32 if soft.shape[1] < 2**24 else torch.float64
        self.denominator += hard.sum(1, dtype=count_dtype).to(torch.float32)
        if out is None:
            out = torch.empty((*logits.shape[:2], *self.target_size), dtype=torch.bool, device=logits.device)
        # Frame by frame: the same values (bilinear resizing is per frame), with the [k, 1, h, w] float
        # intermediate reused from cache instead of a [k, Tc, h, w] one (docs/performance.md).
        for frame in range(logits.shape[1]):
            resized = F.interpolate(logits[:, frame : frame + 1], size=self.target_size, mode="bilinear",
                                    align_corners=False)  # fmt: skip
            torch.gt(resized, 0.0, out=out[:, frame : frame + 1])
        return out

    def rescored(self, scores: torch.Tensor) -> torch.Tensor:
        """Final scores: class score x mean foreground probability of the mask over the whole video."""
        if self.numerator is None:
            raise RuntimeError("no clip was rendered")
        return scores * (self.numerator / (self.denominator + 1e-6))


def score_order(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices sorting instances by decreasing score (ties keep top-k order), keeping score > threshold."""
    order = torch.argsort(scores, descending=True, stable=True)
    return order[scores[order] > threshold] if threshold > 0 else order
