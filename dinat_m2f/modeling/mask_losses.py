"""Mask losses of Mask2Former on point-sampled logits: sigmoid cross-entropy and dice, in a
pairwise form (every prediction vs every target: the matcher's costs) and a matched form
(prediction i vs target i: the criterion's losses)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_sigmoid_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of each prediction against each target.

    logits: (Q, P) mask logits at P points; targets: (T, P) in [0, 1]. Returns (Q, T)."""
    points = logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    cost = torch.einsum("qp,tp->qt", pos, targets) + torch.einsum("qp,tp->qt", neg, 1 - targets)
    return cost / points


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - soft dice of each prediction against each target (+1 smoothing).

    logits: (Q, P); targets: (T, P). Returns (Q, T)."""
    probs = logits.sigmoid()
    numerator = 2 * torch.einsum("qp,tp->qt", probs, targets)
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def sigmoid_ce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Binary cross-entropy per mask (mean over points), summed and divided by num_masks.

    logits, targets: (M, P)."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """1 - soft dice per mask (+1 smoothing), summed and divided by num_masks.

    logits, targets: (M, P)."""
    probs = logits.sigmoid().flatten(1)
    targets = targets.flatten(1)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks
