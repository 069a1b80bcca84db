"""Mask2Former's training losses: classification and point-sampled mask losses of the matched
predictions, for the final and (deep supervision) every intermediate prediction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.utils.comm import get_world_size
from torch import nn

from .mask_losses import dice_loss, sigmoid_ce_loss
from .matcher import HungarianMatcher
from .point_sampling import mask_uncertainty, point_sample, uncertain_point_coords_with_randomness

SUPPORTED_LOSSES = ("labels", "masks")


class SetCriterion(nn.Module):
    """Args:
    num_classes: classes without "no object".
    matcher: assigns predictions to targets.
    weight_dict: loss name -> weight (kept here for the meta-architecture to apply).
    eos_coef: weight of the "no object" class in the cross-entropy.
    losses: which of "labels" (loss_ce), "masks" (loss_mask, loss_dice) to compute.
    num_points / oversample_ratio / importance_sample_ratio: point sampling of the mask losses.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        eos_coef: float,
        losses: list[str],
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
    ) -> None:
        super().__init__()
        unknown = [name for name in losses if name not in SUPPORTED_LOSSES]
        if unknown:
            raise ValueError(
                f"SetCriterion: unknown losses {unknown}; supported {SUPPORTED_LOSSES}"
            )
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = list(losses)
        # persistent: Mask2Former checkpoints contain criterion.empty_weight
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def loss_labels(self, outputs, targets, indices, num_masks) -> dict[str, torch.Tensor]:
        """Cross-entropy over all queries; unmatched queries' target is "no object"."""
        logits = outputs["pred_logits"].float()
        batch_idx, query_idx = _prediction_index(indices)
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        target_classes[batch_idx, query_idx] = torch.cat(
            [t["labels"][j] for t, (_, j) in zip(targets, indices)]
        ).to(logits.device)
        return {
            "loss_ce": F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)
        }

    def loss_masks(self, outputs, targets, indices, num_masks) -> dict[str, torch.Tensor]:
        """Sigmoid CE and dice of matched masks, on points drawn where predictions are
        uncertain (mostly) and uniformly."""
        batch_idx, query_idx = _prediction_index(indices)
        pred_masks = outputs["pred_masks"][batch_idx, query_idx][:, None].float()
        target_masks = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, indices)])
        target_masks = target_masks[:, None].to(pred_masks)
        if pred_masks.shape[0] == 0:  # no targets in the batch: nothing to compare
            zero = outputs["pred_masks"].sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        with torch.no_grad():
            points = uncertain_point_coords_with_randomness(
                pred_masks,
                mask_uncertainty,
                self.num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )
            point_labels = point_sample(target_masks, points, align_corners=False).squeeze(1)
        point_logits = point_sample(pred_masks, points, align_corners=False).squeeze(1)
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """outputs: the decoder's dict (with "aux_outputs"); targets: per image {"labels",
        "masks" (T, H, W) at the padded batch size}. Returns unweighted losses; those of
        intermediate predictions carry a suffix _i."""
        final = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        device_type = final["pred_masks"].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            num_masks = self._average_num_masks(targets, final["pred_logits"].device)
            losses = self._losses_of(final, targets, num_masks)
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                aux_losses = self._losses_of(aux, targets, num_masks)
                losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        return losses

    def _losses_of(self, outputs, targets, num_masks) -> dict[str, torch.Tensor]:
        indices = self.matcher(outputs, targets)
        losses = {}
        for name in self.losses:
            compute = self.loss_labels if name == "labels" else self.loss_masks
            losses.update(compute(outputs, targets, indices, num_masks))
        return losses

    @staticmethod
    def _average_num_masks(targets, device) -> float:
        """Targets per process, averaged over processes (at least 1): the loss normaliser."""
        num_masks = torch.as_tensor(
            [float(sum(len(t["labels"]) for t in targets))], dtype=torch.float32, device=device
        )
        world_size = get_world_size()
        if (
            world_size > 1
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            torch.distributed.all_reduce(num_masks)
        return torch.clamp(num_masks / world_size, min=1).item()

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, eos_coef={self.eos_coef}, losses={self.losses}, "
            f"num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
            f"importance_sample_ratio={self.importance_sample_ratio}"
        )


def _prediction_index(indices) -> tuple[torch.Tensor, torch.Tensor]:
    """(image index, query index) of every matched prediction, flattened over the batch."""
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    query_idx = torch.cat([src for src, _ in indices])
    return batch_idx, query_idx
