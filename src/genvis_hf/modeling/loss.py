"""GenVIS training losses: the Mask2Former frame criterion and the GenVIS clip criterion with unified video label
assignment carried across clips, plus the frame/clip query similarity loss.

`GenVISLoss(config)(clips, targets)` takes the per-clip training outputs of one group of G videos (what
`GenVISModel.forward_video_group(..., output_loss_inputs=True)` returns) and the prepared targets of those videos,
and returns a dict of *weighted* loss terms (their sum is the loss), named as in the original code:

- frame level (dropped when `freeze_detector`): `loss_ce`, `loss_mask`, `loss_dice` for the last prediction head
  of the frame decoder and `loss_ce_{i}`, ... for head i (deep supervision);
- clip level, per clip c: `loss_genvis_ce_clip{c}`, `loss_genvis_mask_clip{c}`, `loss_genvis_dice_clip{c}` for
  the last object-decoder layer, `loss_genvis_ce_{d}_clip{c}`, ... for layer d, and `loss_genvis_sim_clip{c}`.

Shapes: G videos of T frames in clips of W frames (the last may be shorter); L = `frame_queries_last_layers`
frame-decoder heads feed the object decoder, as L * G sequences (index l * G + g); D object-decoder layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .matching import ClipMatcher, FrameMatcher, point_sample, uncertain_point_coords


# ---------------------------------------------------------------------------------------------- loss terms
def sigmoid_ce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Binary cross-entropy, averaged over the points of each mask `[N, P]`, summed over masks, / num_masks."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """`sum_n 1 - (2 p.t + 1) / (|p| + |t| + 1)` over masks `[N, P]` (p = sigmoid), / num_masks."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def classification_loss(
    logits: torch.Tensor, target_classes: torch.Tensor, class_weights: torch.Tensor
) -> torch.Tensor:
    """Weighted cross-entropy of logits `[S, Q, K+1]` against `[S, Q]` classes ("no object" = K): the weighted
    mean `sum_i w_{y_i} CE_i / sum_i w_{y_i}`, so unmatched queries count `no_object_weight` each."""
    return F.cross_entropy(logits.float().transpose(1, 2), target_classes, class_weights)


def point_mask_losses(
    mask_logits: torch.Tensor, target_masks: torch.Tensor, num_masks: float, num_points: int,
    oversample_ratio: float, importance_sample_ratio: float,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Sigmoid BCE and dice on importance-sampled points, per frame.

    mask_logits `[N, T, h, w]` (stride 4), target_masks `[N, T, H, W]` (full resolution); each of the N * T
    frame masks gets its own points; a mask's T * P point values form one row of the losses.
    """
    num, frames = mask_logits.shape[:2]
    logits = mask_logits.float().flatten(0, 1)[:, None]  # [N*T, 1, h, w]
    targets = target_masks.float().flatten(0, 1)[:, None]
    with torch.no_grad():
        coords = uncertain_point_coords(logits, num_points, oversample_ratio, importance_sample_ratio)
        point_targets = point_sample(targets, coords).view(num, frames * num_points)
    point_logits = point_sample(logits, coords).view(num, frames * num_points)
    return sigmoid_ce_loss(point_logits, point_targets, num_masks), dice_loss(point_logits, point_targets, num_masks)


def similarity_loss(embeddings: torch.Tensor, ids: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """VITA/GenVIS query similarity loss: BCE of the dot products `e_i . e_j` against "same instance", over the
    pairs (i, j) of the same group (one video and frame-decoder layer), averaged over those pairs."""
    logits = embeddings.float() @ embeddings.float().T
    same_group = groups[:, None] == groups[None, :]
    target = ((ids[:, None] == ids[None, :]) & same_group).float()
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * same_group
    return loss.sum() / (same_group.sum() + 1e-6)


def _num_masks(count: float, device: torch.device, reduce: bool = True) -> float:
    """The normaliser of the mask losses: the count averaged over processes (`reduce`), at least 1 (as the
    original)."""
    value = torch.as_tensor([float(count)], device=device)
    if reduce and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(value)
        value = value / torch.distributed.get_world_size()
    return max(float(value.item()), 1.0)


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A zero that still depends on `tensors` (keeps every parameter in the graph, as DDP needs)."""
    return sum(t.sum() for t in tensors) * 0.0


# ---------------------------------------------------------------------------------------------- targets
@dataclass
class VideoTarget:
    """One video's instances, prepared for the losses.

    labels `[N]` (0-based classes), masks `[N, T, H, W]` float at the padded input size, present `[N, T]` bool
    (mask non-empty on that frame). Instances with no pixel on any frame are dropped.
    """

    labels: torch.Tensor
    masks: torch.Tensor
    present: torch.Tensor


def prepare_targets(labels: list[dict], num_frames: int, padded_size: tuple[int, int], device) -> list[VideoTarget]:
    """Turn per-video label dicts (`class_labels` `[N]`, `masks` `[N, T, H', W']`) into `VideoTarget`s whose
    masks are zero-padded (or cropped: outside the real pixels they are empty) to `padded_size`."""
    prepared = []
    for index, label in enumerate(labels):
        masks = torch.as_tensor(label["masks"], device=device)
        classes = torch.as_tensor(label["class_labels"], device=device).long()
        if masks.dim() != 4 or masks.shape[0] != classes.shape[0]:
            raise ValueError(f"labels[{index}]: masks must be [N, T, H, W] with N = len(class_labels), "
                             f"got {tuple(masks.shape)} for {classes.shape[0]} labels")  # fmt: skip
        if masks.shape[1] != num_frames:
            raise ValueError(f"labels[{index}]: masks have {masks.shape[1]} frames, the video has {num_frames}")
        masks = masks[..., : padded_size[0], : padded_size[1]].float()
        masks = F.pad(masks, (0, padded_size[1] - masks.shape[-1], 0, padded_size[0] - masks.shape[-2]))
        present = (
            masks.flatten(2).any(-1) if masks.numel() else torch.zeros(masks.shape[:2], dtype=torch.bool, device=device)
        )
        keep = present.any(1)
        prepared.append(VideoTarget(labels=classes[keep], masks=masks[keep], present=present[keep]))
    return prepared


# ---------------------------------------------------------------------------------------------- criterion
class GenVISLoss:
    """Frame-level and clip-level GenVIS losses for one group of videos (see the module docstring)."""

    def __init__(self, config, reduce_across_processes: bool = True):
        """`reduce_across_processes`: average the mask-loss normalisers over the processes of a distributed run
        (every process must then call the criterion the same number of times)."""
        self.config = config
        self.reduce = reduce_across_processes
        self.num_classes = config.num_labels
        self.frame_matcher = FrameMatcher(config.class_weight, config.mask_weight, config.dice_weight,
                                          config.train_num_points)  # fmt: skip
        self.clip_matcher = ClipMatcher(config.class_weight, config.mask_weight, config.dice_weight,
                                        config.train_num_points)  # fmt: skip
        self.weights = {"ce": config.class_weight, "mask": config.mask_weight, "dice": config.dice_weight,
                        "sim": config.similarity_weight}  # fmt: skip

    def _class_weights(self, no_object_weight: float, device) -> torch.Tensor:
        weights = torch.ones(self.num_classes + 1, device=device)
        weights[-1] = no_object_weight
        return weights

    def _point_losses(self, mask_logits, target_masks, num_masks):
        c = self.config
        return point_mask_losses(mask_logits, target_masks, num_masks, c.train_num_points, c.oversample_ratio,
                                 c.importance_sample_ratio)  # fmt: skip

    # ------------------------------------------------------------------ frame level
    def frame_losses(self, clips, targets: list[VideoTarget]):
        """Returns (weighted frame losses, frame matchings of the last L heads: `[L][g * T + t]`)."""
        config = self.config
        num_heads = len(clips[0].frame_class_logits)
        last_heads = list(range(num_heads - config.frame_queries_last_layers, num_heads))
        compute_losses = not config.freeze_detector
        loss_heads = (
            set(range(num_heads) if config.frame_deep_supervision else [num_heads - 1]) if compute_losses else set()
        )
        uses_similarity = config.use_similarity_heads and config.similarity_weight > 0
        heads = sorted(loss_heads | (set(last_heads) if uses_similarity else set()))

        frame_targets = []  # per (g, t): labels, masks, ids (instance index in the video)
        for target in targets:
            for t in range(target.masks.shape[1]):
                ids = target.present[:, t].nonzero().squeeze(1)
                frame_targets.append({"labels": target.labels[ids], "masks": target.masks[ids, t], "ids": ids})
        device = clips[0].mask_features.device
        num_masks = (
            _num_masks(sum(len(f["ids"]) for f in frame_targets), device, self.reduce) if compute_losses else 1.0
        )
        class_weights = self._class_weights(config.no_object_weight, device)

        losses, last_indices = {}, {}
        for head in heads:
            class_logits = torch.cat([c.frame_class_logits[head] for c in clips], dim=1).flatten(0, 1)  # [G*T, fQ, K+1]
            mask_logits = torch.cat([c.frame_mask_logits[head] for c in clips], dim=1).flatten(0, 1)  # [G*T, fQ, h, w]
            indices = self.frame_matcher(class_logits, mask_logits, frame_targets)
            if head in last_heads:
                last_indices[head] = indices
            if head not in loss_heads:
                continue
            frame_idx = torch.cat([torch.full_like(q, f) for f, (q, _) in enumerate(indices)]).to(device)
            query_idx = torch.cat([q for q, _ in indices]).to(device)
            target_classes = torch.full(class_logits.shape[:2], self.num_classes, dtype=torch.long, device=device)
            target_classes[frame_idx, query_idx] = torch.cat(
                [f["labels"][j.to(device)] for f, (_, j) in zip(frame_targets, indices)]
            )
            loss_ce = classification_loss(class_logits, target_classes, class_weights)
            if len(query_idx):
                target_masks = torch.cat([f["masks"][j.to(device)] for f, (_, j) in zip(frame_targets, indices)])
                loss_mask, loss_dice = self._point_losses(
                    mask_logits[frame_idx, query_idx][:, None], target_masks[:, None], num_masks
                )
            else:
                loss_mask = loss_dice = _zero(mask_logits)
            suffix = "" if head == num_heads - 1 else f"_{head}"
            losses[f"loss_ce{suffix}"] = loss_ce * self.weights["ce"]
            losses[f"loss_mask{suffix}"] = loss_mask * self.weights["mask"]
            losses[f"loss_dice{suffix}"] = loss_dice * self.weights["dice"]
        return losses, [last_indices.get(h) for h in last_heads], frame_targets

    # ------------------------------------------------------------------ clip level
    def __call__(self, clips, targets: list[VideoTarget]) -> dict[str, torch.Tensor]:
        config = self.config
        group = len(targets)
        num_layers_in = config.frame_queries_last_layers  # L
        device = clips[0].mask_features.device
        losses, frame_indices, frame_targets = self.frame_losses(clips, targets)
        class_weights = self._class_weights(config.object_no_object_weight, device)
        total_frames = targets[0].masks.shape[1] if targets else sum(c.mask_features.shape[1] for c in clips)

        seen = [torch.zeros(len(t.labels), dtype=torch.bool, device=device) for t in targets]
        assignments: list[list[torch.Tensor | None]] | None = None  # [decoder layer][sequence] -> [N]
        start = 0
        for c, clip in enumerate(clips):
            out = clip.object_output
            frames = clip.mask_features.shape[1]
            num_decoder_layers = out.class_logits.shape[0]
            if assignments is None:
                assignments = [[None] * (num_layers_in * group) for _ in range(num_decoder_layers)]
            clip_targets = []
            for g, target in enumerate(targets):
                valid = target.present[:, start : start + frames].any(1)
                clip_targets.append({"labels": target.labels, "masks": target.masks[:, start : start + frames],
                                     "valid": valid, "new": valid & ~seen[g]})  # fmt: skip
            num_masks = _num_masks(
                sum(int(t["valid"].sum()) for t in clip_targets) * num_layers_in, device, self.reduce
            )

            for d in range(num_decoder_layers):
                # [L, G, cQ, C] x [G, Tc, C, h, w] -> [L*G, cQ, Tc, h, w]
                embeddings = out.mask_embeddings[d].unflatten(0, (num_layers_in, group))
                mask_logits = torch.einsum("lgqc,gtchw->lgqthw", embeddings, clip.mask_features).flatten(0, 1)
                class_logits = out.class_logits[d]  # [L*G, cQ, K+1]
                target_classes = torch.full(class_logits.shape[:2], self.num_classes, dtype=torch.long, device=device)
                src_logits, src_targets = [], []
                for s in range(num_layers_in * group):
                    target = clip_targets[s % group]
                    assignment = self.clip_matcher(class_logits[s], mask_logits[s], target, assignments[d][s])
                    assignments[d][s] = assignment
                    valid = target["valid"].cpu()
                    queries = assignment[valid].to(device)
                    target_classes[s, queries] = target["labels"][valid.to(device)]
                    src_logits.append(mask_logits[s, queries])
                    src_targets.append(target["masks"][valid.to(device)])
                loss_ce = classification_loss(class_logits, target_classes, class_weights)
                src = torch.cat(src_logits)
                if len(src):
                    loss_mask, loss_dice = self._point_losses(src, torch.cat(src_targets), num_masks)
                else:
                    loss_mask = loss_dice = _zero(mask_logits)
                suffix = f"_clip{c}" if d == num_decoder_layers - 1 else f"_{d}_clip{c}"
                losses[f"loss_genvis_ce{suffix}"] = loss_ce * self.weights["ce"]
                losses[f"loss_genvis_mask{suffix}"] = loss_mask * self.weights["mask"]
                losses[f"loss_genvis_dice{suffix}"] = loss_dice * self.weights["dice"]

            if config.use_similarity_heads and config.similarity_weight > 0:
                losses[f"loss_genvis_sim_clip{c}"] = self.weights["sim"] * self._similarity(
                    clip, assignments[-1], clip_targets, frame_indices, frame_targets, start, total_frames, group
                )
            for g, target in enumerate(clip_targets):
                seen[g] = seen[g] | target["valid"]
            start += frames
        return losses

    def _similarity(self, clip, clip_assignment, clip_targets, frame_indices, frame_targets, start, total_frames,
                    group) -> torch.Tensor:  # fmt: skip
        """Similarity loss of one clip: matched frame queries of every frame and matched clip queries (last
        decoder layer), grouped per (frame-decoder layer, video)."""
        out = clip.object_output
        num_layers_in = self.config.frame_queries_last_layers
        frames = clip.mask_features.shape[1]
        device = out.frame_similarity_embeddings.device
        fq = out.frame_similarity_embeddings.unflatten(1, (frames, -1)).unflatten(0, (num_layers_in, group))
        embeddings, ids, groups = [], [], []
        for layer in range(num_layers_in):
            for g in range(group):
                for t in range(frames):
                    f = g * total_frames + start + t
                    queries, matched = frame_indices[layer][f]
                    if len(queries) == 0:
                        continue
                    embeddings.append(fq[layer, g, t, queries.to(device)])
                    ids.append(frame_targets[f]["ids"][matched.to(device)])
                    groups.append(torch.full((len(queries),), layer * group + g, device=device))
        if out.clip_similarity_embeddings is not None:
            cq = out.clip_similarity_embeddings[-1]  # [L*G, cQ, C]
            for s in range(num_layers_in * group):
                valid = clip_targets[s % group]["valid"]
                if not bool(valid.any()):
                    continue
                instance_ids = valid.nonzero().squeeze(1)
                embeddings.append(cq[s, clip_assignment[s][valid.cpu()].to(device)])
                ids.append(instance_ids)
                groups.append(torch.full((len(instance_ids),), s, device=device))
        if not embeddings:
            extra = [out.clip_similarity_embeddings] if out.clip_similarity_embeddings is not None else []
            return _zero(out.frame_similarity_embeddings, *extra)
        return similarity_loss(torch.cat(embeddings), torch.cat(ids), torch.cat(groups))


__all__ = [
    "GenVISLoss",
    "VideoTarget",
    "classification_loss",
    "dice_loss",
    "point_mask_losses",
    "prepare_targets",
    "sigmoid_ce_loss",
    "similarity_loss",
]
