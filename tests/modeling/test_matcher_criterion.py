"""Hungarian matcher, mask losses, point sampling and the set criterion."""

import math

import pytest
import torch

from dinat_m2f.modeling.criterion import SetCriterion
from dinat_m2f.modeling.mask_losses import (
    dice_loss,
    pairwise_dice,
    pairwise_sigmoid_ce,
    sigmoid_ce_loss,
)
from dinat_m2f.modeling.matcher import HungarianMatcher
from dinat_m2f.modeling.point_sampling import (
    mask_uncertainty,
    point_sample,
    uncertain_point_coords_with_randomness,
)


def _random_targets(generator, num_targets, num_classes, size=16):
    labels = torch.randint(0, num_classes, (num_targets,), generator=generator)
    masks = torch.zeros(num_targets, size, size)
    for t in range(num_targets):  # a random rectangle per target
        y0, x0 = torch.randint(0, size // 2, (2,), generator=generator).tolist()
        h, w = torch.randint(3, size // 2, (2,), generator=generator).tolist()
        masks[t, y0 : y0 + h, x0 : x0 + w] = 1
    return {"labels": labels, "masks": masks}


def _predictions_equal_to(targets, num_queries, num_classes, permutation):
    """Logits that put query permutation[t] exactly on target t; other queries predict
    "no object" with empty masks."""
    size = targets["masks"].shape[-1]
    logits = torch.full((num_queries, num_classes + 1), -10.0)
    logits[:, num_classes] = 10.0
    masks = torch.full((num_queries, size, size), -20.0)
    for t, q in enumerate(permutation):
        logits[q] = -10.0
        logits[q, targets["labels"][t]] = 10.0
        masks[q] = torch.where(targets["masks"][t] > 0, 20.0, -20.0)
    return logits, masks


def test_matcher_finds_identity_assignment_when_predictions_equal_targets():
    generator = torch.Generator().manual_seed(0)
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=400)
    num_queries, num_classes = 10, 5
    targets, logits, masks, permutations = [], [], [], []
    for num_targets in (4, 6):
        target = _random_targets(generator, num_targets, num_classes)
        permutation = torch.randperm(num_queries, generator=generator)[:num_targets].tolist()
        lg, mk = _predictions_equal_to(target, num_queries, num_classes, permutation)
        targets.append(target)
        logits.append(lg)
        masks.append(mk)
        permutations.append(permutation)
    indices = matcher(
        {"pred_logits": torch.stack(logits), "pred_masks": torch.stack(masks)}, targets
    )
    for (query_idx, target_idx), permutation in zip(indices, permutations):
        assignment = dict(zip(target_idx.tolist(), query_idx.tolist()))
        assert assignment == dict(enumerate(permutation))
        assert query_idx.dtype == torch.int64


def test_matcher_handles_image_without_targets():
    matcher = HungarianMatcher(1.0, 1.0, 1.0, num_points=16)
    outputs = {"pred_logits": torch.randn(1, 5, 4), "pred_masks": torch.randn(1, 5, 8, 8)}
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 8, 8)}]
    ((rows, cols),) = matcher(outputs, targets)
    assert rows.numel() == 0 and cols.numel() == 0


def test_matcher_rejects_bad_arguments():
    with pytest.raises(ValueError, match="all 0"):
        HungarianMatcher(0, 0, 0, num_points=10)
    with pytest.raises(ValueError, match="num_points"):
        HungarianMatcher(1, 1, 1, num_points=0)


def test_pairwise_losses_equal_matched_losses_pair_by_pair():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 30, generator=generator, dtype=torch.float64)
    targets = (torch.rand(3, 30, generator=generator, dtype=torch.float64) > 0.5).double()
    ce, dice = pairwise_sigmoid_ce(logits, targets), pairwise_dice(logits, targets)
    for q in range(5):
        for t in range(3):
            # one pair, normalised by 1 mask: the matched losses of that pair
            expected_ce = sigmoid_ce_loss(logits[q : q + 1], targets[t : t + 1], 1)
            p = logits[q].sigmoid()
            expected_dice = 1 - (2 * (p * targets[t]).sum() + 1) / (p.sum() + targets[t].sum() + 1)
            torch.testing.assert_close(ce[q, t], expected_ce)
            torch.testing.assert_close(dice[q, t], expected_dice)
            torch.testing.assert_close(
                dice_loss(logits[q : q + 1], targets[t : t + 1], 1), expected_dice
            )


def test_point_sample_is_bilinear_interpolation_of_pixel_centres():
    image = torch.arange(12.0).view(1, 1, 3, 4)
    # pixel (row r, col c) has its centre at ((c + 0.5) / W, (r + 0.5) / H)
    points = torch.tensor(
        [[[0.5 / 4, 0.5 / 3], [2.5 / 4, 1.5 / 3], [1.0 / 4, 0.5 / 3], [0.5, 0.5]]]
    )
    values = point_sample(image, points, align_corners=False)
    assert values.shape == (1, 1, 4)
    # exact centres, halfway between columns 0 and 1 of row 0, and the centre of the image
    torch.testing.assert_close(values[0, 0], torch.tensor([0.0, 6.0, 0.5, 5.5]))


def test_uncertain_points_are_the_most_uncertain_candidates():
    logits = torch.linspace(-1, 1, 64).view(1, 1, 1, 64).expand(2, 1, 8, 64).contiguous()
    torch.manual_seed(0)
    points = uncertain_point_coords_with_randomness(logits, mask_uncertainty, 32, 3.0, 1.0)
    assert points.shape == (2, 32, 2)
    # replay the 96 uniform candidates and keep the 32 with the logit closest to 0
    torch.manual_seed(0)
    candidates = torch.rand(2, 96, 2)
    uncertainty = -point_sample(logits, candidates, align_corners=False)[:, 0].abs()
    top = uncertainty.topk(32, dim=1).indices
    for b in range(2):
        expected = {tuple(p) for p in candidates[b, top[b]].tolist()}
        assert {tuple(p) for p in points[b].tolist()} == expected
    # half importance-sampled, half uniform: 16 of the replayed top points, in [0, 1]
    torch.manual_seed(0)
    mixed = uncertain_point_coords_with_randomness(logits, mask_uncertainty, 32, 3.0, 0.5)
    assert mixed.shape == (2, 32, 2) and (mixed >= 0).all() and (mixed <= 1).all()
    top16 = uncertainty.topk(16, dim=1).indices
    assert {tuple(p) for p in mixed[0, :16].tolist()} == {
        tuple(p) for p in candidates[0, top16[0]].tolist()
    }


def _criterion(num_classes=4, num_points=256, eos_coef=0.1):
    matcher = HungarianMatcher(2.0, 5.0, 5.0, num_points=num_points)
    weights = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    return SetCriterion(
        num_classes, matcher, weights, eos_coef, ["labels", "masks"], num_points, 3.0, 0.75
    )


def test_criterion_losses_finite_with_aux_and_empty_image():
    torch.manual_seed(0)
    criterion = _criterion()
    outputs = {
        "pred_logits": torch.randn(2, 6, 5),
        "pred_masks": torch.randn(2, 6, 16, 16),
        "aux_outputs": [
            {"pred_logits": torch.randn(2, 6, 5), "pred_masks": torch.randn(2, 6, 16, 16)}
        ],
    }
    targets = [
        _random_targets(torch.Generator().manual_seed(2), 3, 4),
        {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 16, 16)},
    ]
    losses = criterion(outputs, targets)
    assert set(losses) == {
        "loss_ce",
        "loss_mask",
        "loss_dice",
        "loss_ce_0",
        "loss_mask_0",
        "loss_dice_0",
    }
    assert all(torch.isfinite(v) for v in losses.values())
    assert criterion.empty_weight.tolist() == pytest.approx([1, 1, 1, 1, 0.1])


def test_classification_loss_weights_no_object():
    criterion = _criterion(num_classes=2, eos_coef=0.25)
    logits = torch.randn(1, 3, 3)
    targets = [{"labels": torch.tensor([1]), "masks": torch.ones(1, 4, 4)}]
    indices = [(torch.tensor([2]), torch.tensor([0]))]
    loss = criterion.loss_labels({"pred_logits": logits}, targets, indices)["loss_ce"]
    # weighted mean: queries 0, 1 -> "no object" (weight 0.25), query 2 -> class 1 (weight 1)
    nll = -logits[0].log_softmax(-1)
    expected = (0.25 * nll[0, 2] + 0.25 * nll[1, 2] + nll[2, 1]) / (0.25 + 0.25 + 1)
    torch.testing.assert_close(loss, expected)


def test_criterion_loss_decreases_when_predictions_are_optimised():
    torch.manual_seed(0)
    criterion = _criterion()
    targets = [_random_targets(torch.Generator().manual_seed(s), 3, 4) for s in (3, 4)]
    logits = torch.zeros(2, 6, 5, requires_grad=True)
    masks = torch.zeros(2, 6, 16, 16, requires_grad=True)
    optimizer = torch.optim.Adam([logits, masks], lr=0.1)

    def total():
        losses = criterion({"pred_logits": logits, "pred_masks": masks}, targets)
        return sum(criterion.weight_dict[k] * v for k, v in losses.items())

    first = total().item()
    for _ in range(150):
        optimizer.zero_grad()
        loss = total()
        loss.backward()
        optimizer.step()
    last = total().item()
    assert math.isfinite(first) and last < 0.2 * first, (first, last)


def test_criterion_rejects_unknown_loss():
    matcher = HungarianMatcher(1, 1, 1, num_points=4)
    with pytest.raises(ValueError, match="boxes"):
        SetCriterion(3, matcher, {}, 0.1, ["labels", "boxes"], 4, 3.0, 0.75)
