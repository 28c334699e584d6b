"""Matchers and loss terms against hand-computed values; GenVIS's clip-to-clip assignment; gradients."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config_kwargs

from genvis_hf import GenVISConfig, GenVISForVideoInstanceSegmentation
from genvis_hf.modeling.loss import (
    GenVISLoss,
    classification_loss,
    dice_loss,
    point_mask_losses,
    prepare_targets,
    sigmoid_ce_loss,
    similarity_loss,
)
from genvis_hf.modeling.matching import (
    ClipMatcher,
    FrameMatcher,
    hungarian,
    pairwise_dice_cost,
    pairwise_sigmoid_ce_cost,
    point_sample,
    uncertain_point_coords,
)


# ---------------------------------------------------------------------------------------------- matching
def test_hungarian_on_a_hand_made_matrix():
    # The greedy choice (row 0 -> col 0, cost 1) forces 10 + 10; the optimum is 2 + 2 + 3 = 7.
    cost = torch.tensor([[1.0, 2.0, 10.0], [2.0, 10.0, 10.0], [10.0, 10.0, 3.0], [9.0, 9.0, 9.0]])
    rows, cols = hungarian(cost)
    assert cols.tolist() == [0, 1, 2]  # sorted by target
    assert rows.tolist() == [1, 0, 2]
    assert float(cost[rows, cols].sum()) == 7.0


@pytest.mark.parametrize("seed", range(5))
def test_hungarian_is_optimal_against_brute_force(seed):
    generator = torch.Generator().manual_seed(seed)
    cost = torch.rand(5, 3, generator=generator)
    rows, cols = hungarian(cost)
    best = min(sum(float(cost[r, c]) for c, r in enumerate(p)) for p in itertools.permutations(range(5), 3))
    assert float(cost[rows, cols].sum()) == pytest.approx(best, abs=1e-6)
    assert len(set(rows.tolist())) == 3


def test_pairwise_costs_by_hand():
    logits = torch.tensor([[0.0, 0.0], [2.0, -2.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    ce = pairwise_sigmoid_ce_cost(logits, targets)
    log2 = math.log(2)
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731  BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x)
    assert ce[0, 0] == pytest.approx(log2)
    assert ce[1, 0] == pytest.approx((softplus(-2) + softplus(-2)) / 2)
    assert ce[1, 1] == pytest.approx((softplus(-2) + softplus(2)) / 2)
    dice = pairwise_dice_cost(logits, targets)
    s = 1 / (1 + math.exp(-2))
    assert dice[0, 0] == pytest.approx(1 - (2 * 0.5 + 1) / (1.0 + 1 + 1))
    assert dice[1, 1] == pytest.approx(1 - (2 * (s + 1 - s) + 1) / (1.0 + 2 + 1))


def test_frame_matcher_pairs_each_instance_with_the_query_that_predicts_it():
    torch.manual_seed(0)
    masks = torch.zeros(2, 16, 16)
    masks[0, :8], masks[1, 8:] = 1, 1
    mask_logits = torch.full((1, 4, 16, 16), -8.0)
    mask_logits[0, 3] = masks[0] * 16 - 8  # query 3 predicts instance 0
    mask_logits[0, 1] = masks[1] * 16 - 8  # query 1 predicts instance 1
    class_logits = torch.zeros(1, 4, 3)
    matcher = FrameMatcher(class_weight=2, mask_weight=5, dice_weight=5, num_points=200)
    ((queries, targets),) = matcher(class_logits, mask_logits, [{"labels": torch.tensor([0, 1]), "masks": masks}])
    assert targets.tolist() == [0, 1] and queries.tolist() == [3, 1]


def _clip_target(labels, masks, new):
    return {"labels": torch.tensor(labels), "masks": masks, "new": torch.tensor(new)}


def test_clip_matcher_carries_an_instance_query_and_reserves_it_while_occluded():
    torch.manual_seed(0)
    num_queries = 4
    masks = torch.zeros(2, 1, 16, 16)
    masks[0, 0, :8], masks[1, 0, 8:] = 1, 1
    matcher = ClipMatcher(class_weight=2, mask_weight=5, dice_weight=5, num_points=200)

    # Clip 0: only instance 0 is visible; query 2 predicts it.
    logits = torch.full((num_queries, 1, 16, 16), -8.0)
    logits[2] = masks[0] * 16 - 8
    first = matcher(torch.zeros(num_queries, 3), logits, _clip_target([0, 1], masks * torch.tensor([1.0, 0]).view(2, 1, 1, 1),
                                                                      [True, False]), None)  # fmt: skip
    assert first.tolist() == [2, -1]

    # Clip 1: instance 0 is occluded (absent), instance 1 enters and query 2 now fits it best: it must not take
    # instance 0's query. Query 0 is the next best.
    logits = torch.full((num_queries, 1, 16, 16), -8.0)
    logits[2] = masks[1] * 16 - 8
    logits[0] = masks[1] * 12 - 6
    second = matcher(torch.zeros(num_queries, 3), logits, _clip_target([0, 1], masks * torch.tensor([0.0, 1]).view(2, 1, 1, 1),
                                                                       [False, True]), first)  # fmt: skip
    assert second.tolist() == [2, 0]

    # Clip 2: nothing new: the assignment is carried unchanged whatever the predictions.
    third = matcher(torch.randn(num_queries, 3), torch.randn(num_queries, 1, 16, 16),
                    _clip_target([0, 1], masks, [False, False]), second)  # fmt: skip
    assert third.tolist() == [2, 0]


# ---------------------------------------------------------------------------------------------- points
def test_point_sample_reads_pixel_centres_and_interpolates():
    maps = torch.arange(16.0).view(1, 1, 4, 4)
    coords = torch.tensor([[[0.125, 0.125], [0.375, 0.125], [0.25, 0.125], [0.125, 0.375]]])  # (x, y)
    values = point_sample(maps, coords)[0, 0]
    assert values.tolist() == pytest.approx([0.0, 1.0, 0.5, 4.0])


def test_uncertain_points_prefer_logits_near_zero():
    torch.manual_seed(0)
    logits = torch.full((1, 1, 32, 32), 10.0)
    logits[..., :, 16:] = 0.0  # right half uncertain
    coords = uncertain_point_coords(logits, num_points=100, oversample_ratio=3, importance_sample_ratio=0.75)
    assert coords.shape == (1, 100, 2)
    assert (coords[0, :75, 0] >= 0.5 - 1 / 32).all()  # the 75 importance points lie in the uncertain half


# ---------------------------------------------------------------------------------------------- loss terms
def test_sigmoid_ce_and_dice_by_hand():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected_ce = ((sp(0) + sp(2)) / 2 + (sp(-1) + sp(1)) / 2) / 4.0
    assert float(sigmoid_ce_loss(logits, targets, 4.0)) == pytest.approx(expected_ce)
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    d0 = 1 - (2 * s(0) + 1) / (s(0) + s(2) + 1 + 1)
    d1 = 1 - (0 + 1) / (s(-1) + s(1) + 0 + 1)
    assert float(dice_loss(logits, targets, 2.0)) == pytest.approx((d0 + d1) / 2)


def test_classification_loss_weights_no_object_by_hand():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])  # 2 classes + no-object
    target = torch.tensor([[0, 2]])
    weights = torch.tensor([1.0, 1.0, 0.1])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce1 = -math.log(math.e / (math.e + 2))
    assert float(classification_loss(logits, target, weights)) == pytest.approx((ce0 + 0.1 * ce1) / 1.1)


def test_point_mask_losses_on_constant_masks_by_hand():
    # Zero logits against empty targets: constant even where a point's bilinear footprint reaches the zero
    # padding outside the map, so every sampled value is known.
    torch.manual_seed(0)
    logits = torch.zeros(2, 3, 8, 8)  # 2 instances, 3 frames
    targets = torch.zeros(2, 3, 32, 32)
    ce, dice = point_mask_losses(logits, targets, num_masks=4.0, num_points=50, oversample_ratio=3,
                                 importance_sample_ratio=0.75)  # fmt: skip
    assert float(ce) == pytest.approx(2 * math.log(2) / 4.0, rel=1e-6)  # mean BCE log 2 per mask, 2 masks / 4
    points = 3 * 50  # a mask's points over its 3 frames
    assert float(dice) == pytest.approx(2 * (1 - 1 / (0.5 * points + 1)) / 4.0, rel=1e-6)


def test_similarity_loss_by_hand():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    ids = torch.tensor([7, 7, 8, 7])
    groups = torch.tensor([0, 0, 0, 1])  # the last one is alone in its group
    logits = embeddings @ embeddings.T
    target = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float)
    same = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.float)
    expected = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * same).sum() / 10
    assert float(similarity_loss(embeddings, ids, groups)) == pytest.approx(float(expected))


# ---------------------------------------------------------------------------------------------- model loss
def _labels(num_frames=4, size=64):
    masks = torch.zeros(3, num_frames, size, size, dtype=torch.bool)
    masks[0, :, 4:20, 4:24] = True
    masks[1, 1:, 30:50, 28:60] = True  # enters at frame 1
    masks[2, :2, 40:60, 2:20] = True  # leaves after frame 1
    return [{"class_labels": torch.tensor([1, 2, 3]), "masks": masks},
            {"class_labels": torch.tensor([4]), "masks": masks[:1]}]  # fmt: skip


def _model(**overrides):
    config = GenVISConfig(**tiny_config_kwargs(train_num_points=128, **overrides))
    return GenVISForVideoInstanceSegmentation(config).train()


def test_loss_terms_names_and_frozen_detector_drops_frame_losses():
    model = _model(freeze_detector=False, clip_length=2)
    out = model(pixel_values=torch.randn(2, 4, 3, 64, 64), labels=_labels())
    names = set(out.loss_dict)
    heads = model.config.frame_decoder_layers  # heads 0..L-1 are auxiliary
    assert {"loss_ce", "loss_mask", "loss_dice"} | {f"loss_ce_{i}" for i in range(heads)} <= names
    for c in range(2):
        assert {f"loss_genvis_ce_clip{c}", f"loss_genvis_mask_clip{c}", f"loss_genvis_dice_clip{c}",
                f"loss_genvis_sim_clip{c}", f"loss_genvis_ce_0_clip{c}"} <= names  # fmt: skip
    assert torch.isclose(out.loss, sum(out.loss_dict.values()))
    assert out.class_queries_logits.shape == (2, 2, 10, 8)  # the inference outputs come along

    frozen = _model(freeze_detector=True, clip_length=2)
    names = set(frozen(pixel_values=torch.randn(2, 4, 3, 64, 64), labels=_labels()).loss_dict)
    assert not any(n.startswith(("loss_ce", "loss_mask", "loss_dice")) for n in names)


@pytest.mark.parametrize("freeze", [False, True])
def test_gradients_reach_every_trainable_parameter_and_only_those(freeze):
    model = _model(freeze_detector=freeze, clip_length=1)  # 4 clips: the memory read has >= 2 entries to weigh
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if freeze:
        assert trainable == {n for n, _ in model.named_parameters() if n.startswith("model.object_decoder.")}
    else:
        assert trainable == {n for n, _ in model.named_parameters()}
    model(pixel_values=torch.randn(2, 4, 3, 64, 64), labels=_labels()).loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name


def test_inference_outputs_do_not_change_with_the_training_path():
    model = _model(clip_length=2).eval()
    x = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        plain = model(pixel_values=x)
        with_loss = model(pixel_values=x, labels=_labels()[1:])
    torch.testing.assert_close(with_loss.class_queries_logits, plain.class_queries_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(with_loss.mask_embeddings, plain.mask_embeddings, atol=1e-5, rtol=0)


def test_the_criterion_carries_assignments_across_clips():
    """Inside GenVISLoss, an instance visible in every clip keeps the query it got in clip 0, in every
    (frame-decoder layer, video) sequence and decoder layer."""
    model = _model(clip_length=1)
    criterion = GenVISLoss(model.config)
    seen = []
    original = criterion.clip_matcher.__call__

    class Recorder:
        def __call__(self, class_logits, mask_logits, target, previous):
            result = original(class_logits, mask_logits, target, previous)
            seen.append((previous, result))
            return result

    criterion.clip_matcher = Recorder()
    labels = _labels()
    _, groups = model.model.run_video_groups(torch.randn(2, 4, 3, 64, 64), output_loss_inputs=True)
    members, clips, (length, h, w) = groups[0].members, groups[0].clips, groups[0].size
    criterion(clips, prepare_targets([labels[b] for b in members], length, (h, w), torch.device("cpu")))
    for previous, result in seen:
        if previous is not None:
            carried = previous >= 0
            assert torch.equal(result[carried], previous[carried])
        assert len(set(result[result >= 0].tolist())) == int((result >= 0).sum())  # one query per instance
    assert any(previous is not None and (previous >= 0).any() for previous, _ in seen)
