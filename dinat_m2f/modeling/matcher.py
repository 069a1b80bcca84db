"""Hungarian matching of Mask2Former's predictions to the ground-truth segments."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from .mask_losses import pairwise_dice, pairwise_sigmoid_ce
from .point_sampling import point_sample


class NonFiniteCostError(FloatingPointError):
    """The matching cost holds NaN or infinity: the model's predictions are not finite."""


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets minimising
    cost_class * (-p(class)) + cost_mask * sigmoid CE + cost_dice * dice,
    with the mask costs computed on `num_points` random points shared by all masks of an image,
    in float32 (also under autocast).

    Args:
        cost_class / cost_mask / cost_dice: weights of the three costs (not all 0).
        num_points: points sampled per image for the mask costs.
    """

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_mask: float = 1.0,
        cost_dice: float = 1.0,
        num_points: int = 0,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: cost_class, cost_mask and cost_dice are all 0")
        if num_points <= 0:
            raise ValueError(f"HungarianMatcher: num_points must be > 0, got {num_points}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(
        self,
        outputs: dict,
        targets: list[dict],
        generators: list[torch.Generator] | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """outputs: {"pred_logits": (N, Q, K + 1), "pred_masks": (N, Q, H, W)}; targets: per
        image {"labels": (T,) int64, "masks": (T, H', W')}; generators: per image, for its
        random points (default torch's global generator). Returns per image (query indices,
        target indices), int64 tensors of length min(Q, T), sorted by query index."""
        num_queries = outputs["pred_logits"].shape[1]
        indices = []
        for b, target in enumerate(targets):
            cost = self.cost_matrix(
                outputs["pred_logits"][b],
                outputs["pred_masks"][b],
                target["labels"],
                target["masks"],
                generator=None if generators is None else generators[b],
            )
            cost = cost.reshape(num_queries, -1).cpu()
            if not bool(torch.isfinite(cost).all()):  # scipy's error would not say why
                raise NonFiniteCostError(_nonfinite_cost_message(b, cost, outputs))
            rows, cols = linear_sum_assignment(cost.numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices

    def cost_matrix(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        labels: torch.Tensor,
        masks: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Costs (Q, T) of one image: pred_logits (Q, K + 1), pred_masks (Q, H, W), labels
        (T,), masks (T, H', W'); the points are drawn from `generator` (default global)."""
        device_type = pred_masks.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            probs = pred_logits.float().softmax(-1)
            cost_class = -probs[:, labels]
            points = torch.rand(
                1, self.num_points, 2, device=pred_masks.device, generator=generator
            )
            target_points = point_sample(
                masks[:, None].float(), points.repeat(masks.shape[0], 1, 1), align_corners=False
            ).squeeze(1)
            pred_points = point_sample(
                pred_masks[:, None].float(),
                points.repeat(pred_masks.shape[0], 1, 1),
                align_corners=False,
            ).squeeze(1)
            cost_mask = pairwise_sigmoid_ce(pred_points, target_points)
            cost_dice = pairwise_dice(pred_points, target_points)
        return (
            self.cost_mask * cost_mask + self.cost_class * cost_class + self.cost_dice * cost_dice
        )

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, num_points={self.num_points}"
        )


def _nonfinite_cost_message(image: int, cost: torch.Tensor, outputs: dict) -> str:
    def bad(t: torch.Tensor) -> str:
        return f"{int((~torch.isfinite(t.detach())).sum())} of {t.numel()}"

    return (
        f"the matching cost of image {image} of the batch holds {bad(cost)} NaN or infinite "
        f"entries (non-finite pred_logits: {bad(outputs['pred_logits'][image])}, pred_masks: "
        f"{bad(outputs['pred_masks'][image])})"
    )
