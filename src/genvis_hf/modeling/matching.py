"""Hungarian matching for GenVIS training: point sampling, pairwise mask costs, the per-frame Mask2Former
matcher and GenVIS's clip-to-clip ("unified video label assignment") matcher.

Conventions: predictions are logits; targets are float masks in {0, 1}. Coordinates for point sampling are
normalised to [0, 1] over the (padded) frame, so predictions at stride 4 and targets at full resolution are
sampled at the same places. A matching is returned as `(query_indices, target_indices)` sorted by target.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.extras import MissingExtraError, missing_extra_message

try:
    from scipy.optimize import linear_sum_assignment
except ModuleNotFoundError as error:  # the training losses are the [train] extra's
    raise MissingExtraError(missing_extra_message("GenVIS's training losses", "scipy")) from error

# A cost large enough that the assignment never prefers it, small enough to stay finite in float32.
_BLOCKED = 1e6


# ---------------------------------------------------------------------------------------------- points
def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample `maps` `[N, C, H, W]` at `coords` `[N, P, 2]` ((x, y) in [0, 1]) -> `[N, C, P]`.

    Same convention as `grid_sample(align_corners=False)`: (0, 0) is the top-left corner of the first pixel,
    (1, 1) the bottom-right corner of the last; samples outside the pixel centres blend with zero padding.
    """
    grid = (2.0 * coords - 1.0).unsqueeze(2)  # [N, P, 1, 2]
    return F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", align_corners=False).squeeze(3)


def uncertain_point_coords(
    logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> torch.Tensor:
    """PointRend's training-time point selection for single-channel logits `[N, 1, H, W]` -> `[N, P, 2]`.

    Draw `oversample_ratio * P` uniform candidates, keep the `importance_sample_ratio * P` most uncertain ones
    (smallest |logit|), and fill the rest with fresh uniform points.
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError("need oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1")
    num_masks = logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    candidates = torch.rand(num_masks, num_candidates, 2, device=logits.device)
    uncertainty = -point_sample(logits.detach().float(), candidates).squeeze(1).abs()  # [N, candidates]
    num_uncertain = int(importance_sample_ratio * num_points)
    chosen = uncertainty.topk(num_uncertain, dim=1).indices  # [N, num_uncertain]
    coords = torch.gather(candidates, 1, chosen.unsqueeze(-1).expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        coords = torch.cat([coords, torch.rand(num_masks, num_random, 2, device=logits.device)], dim=1)
    return coords


# ---------------------------------------------------------------------------------------------- costs
def pairwise_sigmoid_ce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every prediction `[N, P]` against every target `[M, P]` -> `[N, M]`."""
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    cost = positive @ targets.T + negative @ (1 - targets).T
    return cost / logits.shape[1]


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss `1 - (2|p.t| + 1) / (|p| + |t| + 1)` of every prediction `[N, P]` against every target
    `[M, P]` -> `[N, M]` (p = sigmoid of the logits)."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def hungarian(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost assignment of a `[num_queries, num_targets]` cost matrix (scipy's
    `linear_sum_assignment`); returns `(query_indices, target_indices)` sorted by target index."""
    cost = cost.detach().float().cpu()
    if not torch.isfinite(cost).all():
        cost = torch.nan_to_num(cost, nan=_BLOCKED, posinf=_BLOCKED, neginf=-_BLOCKED)
    rows, cols = linear_sum_assignment(cost.numpy())
    order = np.argsort(cols, kind="stable")
    return torch.as_tensor(rows[order], dtype=torch.long), torch.as_tensor(cols[order], dtype=torch.long)


def matching_cost(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    target_labels: torch.Tensor,
    target_masks: torch.Tensor,
    num_points: int,
    class_weight: float,
    mask_weight: float,
    dice_weight: float,
) -> torch.Tensor:
    """Mask2Former/GenVIS matching cost `[Q, N]` of Q predictions against N targets.

    class_logits `[Q, K+1]`; mask_logits `[Q, T, h, w]` (T frames, 1 for a single frame); target_labels `[N]`;
    target_masks `[N, T, H, W]`. Masks are compared on `num_points` uniform points shared by every prediction,
    target and frame; the class cost is `-p(target class)`.
    """
    class_cost = -class_logits.float().softmax(-1)[:, target_labels]  # [Q, N]
    coords = torch.rand(1, num_points, 2, device=mask_logits.device)
    predicted = point_sample(mask_logits.float(), coords.expand(mask_logits.shape[0], -1, -1)).flatten(1)
    target = point_sample(target_masks.float(), coords.expand(target_masks.shape[0], -1, -1)).flatten(1)
    return (
        mask_weight * pairwise_sigmoid_ce_cost(predicted, target)
        + class_weight * class_cost
        + dice_weight * pairwise_dice_cost(predicted, target)
    )


# ---------------------------------------------------------------------------------------------- matchers
class FrameMatcher:
    """Mask2Former's per-frame Hungarian matcher: each frame's fQ queries against its present instances."""

    def __init__(self, class_weight: float, mask_weight: float, dice_weight: float, num_points: int):
        if class_weight == 0 and mask_weight == 0 and dice_weight == 0:
            raise ValueError("all matching costs are 0")
        self.class_weight, self.mask_weight, self.dice_weight = class_weight, mask_weight, dice_weight
        self.num_points = num_points

    @torch.no_grad()
    def __call__(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, targets: list[dict]):
        """class_logits `[F, fQ, K+1]`, mask_logits `[F, fQ, h, w]` for F frames; `targets[f]` has `labels`
        `[n]` and `masks` `[n, H, W]`. Returns one `(query_indices, target_indices)` per frame."""
        indices = []
        for f, target in enumerate(targets):
            if len(target["labels"]) == 0:
                empty = torch.zeros(0, dtype=torch.long)
                indices.append((empty, empty))
                continue
            cost = matching_cost(class_logits[f], mask_logits[f][:, None], target["labels"], target["masks"][:, None],
                                 self.num_points, self.class_weight, self.mask_weight, self.dice_weight)  # fmt: skip
            indices.append(hungarian(cost))
        return indices


class ClipMatcher:
    """GenVIS's unified video label assignment, one clip at a time.

    An instance keeps the query it was given when it first appeared (in any earlier clip). Only instances that
    appear for the first time in this clip ("new") are matched, by Hungarian matching against the queries no
    earlier instance holds. Difference from the original code: the original blocks only the queries of earlier
    instances that are visible in this clip, so a new instance could take the query of an instance that is
    momentarily occluded, and both would then share it when it comes back; here every query already given to an
    instance of the video stays reserved.
    """

    def __init__(self, class_weight: float, mask_weight: float, dice_weight: float, num_points: int):
        if class_weight == 0 and mask_weight == 0 and dice_weight == 0:
            raise ValueError("all matching costs are 0")
        self.class_weight, self.mask_weight, self.dice_weight = class_weight, mask_weight, dice_weight
        self.num_points = num_points

    @torch.no_grad()
    def __call__(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, target: dict,
                 previous: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        """One sequence (one video, one frame-decoder layer) of one clip.

        Args:
            class_logits: `[cQ, K+1]`; mask_logits: `[cQ, Tc, h, w]`.
            target: `labels` `[N]`, `masks` `[N, Tc, H, W]`, `new` bool `[N]` (first visible in this clip).
            previous: `[N]` query of each instance after the previous clip (-1 = none yet), or None.

        Returns:
            `[N]` long: the query of each instance after this clip (-1 for instances not seen yet).
        """
        num_targets = len(target["labels"])
        assignment = previous.clone() if previous is not None else torch.full((num_targets,), -1, dtype=torch.long)
        new = target["new"].cpu()
        new_targets = new.nonzero().squeeze(1)
        if len(new_targets) == 0:
            return assignment
        free = torch.ones(class_logits.shape[0], dtype=torch.bool)
        taken = assignment[assignment >= 0]
        free[taken] = False
        free_queries = free.nonzero().squeeze(1)
        if len(free_queries) < len(new_targets):
            raise ValueError(
                f"{num_targets} instances in one video but only {class_logits.shape[0]} clip queries: "
                "raise num_clip_queries"
            )
        device = class_logits.device
        cost = matching_cost(
            class_logits[free_queries.to(device)], mask_logits[free_queries.to(device)],
            target["labels"][new_targets.to(device)], target["masks"][new_targets.to(device)],
            self.num_points, self.class_weight, self.mask_weight, self.dice_weight,
        )  # fmt: skip
        rows, cols = hungarian(cost)
        assignment[new_targets[cols]] = free_queries[rows]
        return assignment


__all__ = [
    "ClipMatcher",
    "FrameMatcher",
    "hungarian",
    "matching_cost",
    "pairwise_dice_cost",
    "pairwise_sigmoid_ce_cost",
    "point_sample",
    "uncertain_point_coords",
]
