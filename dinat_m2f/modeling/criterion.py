"""Mask2Former's training losses: classification and point-sampled mask losses of the matched
predictions, for the final and (deep supervision) every intermediate prediction.

Unlike Mask2Former, where each process's classification loss is the weighted mean over its own
queries, every loss is normalised by the whole batch over all processes (Mask2Former does so
for the mask losses only), and images with a seed draw their own random points: the gradients
of a batch do not depend on how it is split over processes. With one process both agree."""

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

    def loss_labels(
        self, outputs, targets, indices, class_weight: float | None = None
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy over all queries; unmatched queries' target is "no object". The sum of
        the queries' class-weighted losses divided by `class_weight`: by default the sum of
        their weights (the weighted mean); `forward` passes the whole batch's, over all
        processes."""
        logits = outputs["pred_logits"].float()
        batch_idx, query_idx = _prediction_index(indices)
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        target_classes[batch_idx, query_idx] = torch.cat(
            [t["labels"][j] for t, (_, j) in zip(targets, indices)]
        ).to(logits.device)
        loss = F.cross_entropy(
            logits.transpose(1, 2), target_classes, self.empty_weight, reduction="sum"
        )
        if class_weight is None:
            class_weight = self.empty_weight[target_classes].sum()
        return {"loss_ce": loss / class_weight}

    def loss_masks(
        self, outputs, targets, indices, num_masks: float, generators=None
    ) -> dict[str, torch.Tensor]:
        """Sigmoid CE and dice of matched masks, on points drawn where predictions are
        uncertain (mostly) and uniformly; each image's points from its generator of
        `generators` (default torch's global generator)."""
        batch_idx, query_idx = _prediction_index(indices)
        pred_masks = outputs["pred_masks"][batch_idx, query_idx][:, None].float()
        target_masks = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, indices)])
        target_masks = target_masks[:, None].to(pred_masks)
        if pred_masks.shape[0] == 0:  # no targets in the batch: nothing to compare
            zero = outputs["pred_masks"].sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        with torch.no_grad():
            # image by image (the matched masks are grouped by image), so that an image's points
            # do not depend on the other images of its batch
            per_image = pred_masks.split([len(src) for src, _ in indices])
            points = torch.cat(
                [
                    uncertain_point_coords_with_randomness(
                        masks,
                        mask_uncertainty,
                        self.num_points,
                        self.oversample_ratio,
                        self.importance_sample_ratio,
                        generator=None if generators is None else generators[b],
                    )
                    for b, masks in enumerate(per_image)
                    if len(masks)
                ]
            )
            point_labels = point_sample(target_masks, points, align_corners=False).squeeze(1)
        point_logits = point_sample(pred_masks, points, align_corners=False).squeeze(1)
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """outputs: the decoder's dict (with "aux_outputs"); targets: per image {"labels",
        "masks" (T, H, W) at the padded batch size, optionally "seed"}. Returns unweighted
        losses; those of intermediate predictions carry a suffix _i.

        An image with a "seed" draws its random points (matcher and mask losses) from a
        generator seeded with it, and the losses are normalised by the whole batch over all
        processes (`_batch_normalisers`): a batch split over several processes then gives the
        gradients of the same batch in one process (DDP averages the processes' gradients)."""
        final = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        predictions = [final, *outputs.get("aux_outputs", [])]
        device = final["pred_logits"].device
        generators = None
        if targets and all("seed" in t for t in targets):
            generators = [
                torch.Generator(device=device).manual_seed(int(t["seed"])) for t in targets
            ]
        with torch.autocast(device_type=device.type, enabled=False):
            indices = [self.matcher(p, targets, generators) for p in predictions]
            num_masks, class_weights = self._batch_normalisers(
                targets, indices, final["pred_logits"].shape[1], device
            )
            losses = {}
            for i, (prediction, matched) in enumerate(zip(predictions, indices)):
                suffix = "" if i == 0 else f"_{i - 1}"
                for name in self.losses:
                    if name == "labels":
                        part = self.loss_labels(prediction, targets, matched, class_weights[i])
                    else:
                        part = self.loss_masks(prediction, targets, matched, num_masks, generators)
                    losses.update({k + suffix: v for k, v in part.items()})
        return losses

    def _batch_normalisers(
        self, targets, indices, num_queries: int, device: torch.device
    ) -> tuple[float, list[float]]:
        """The loss normalisers of the whole batch over all processes, divided by the number of
        processes (DDP averages the gradients, so each process's share adds up to the whole
        batch's loss): the number of target masks (at least 1), and per prediction set the
        sum of the class weights of all queries' targets. One all-reduce."""
        eos = self.empty_weight[-1].double()
        num_masks = float(sum(len(t["labels"]) for t in targets))
        local = [torch.tensor(num_masks, dtype=torch.float64, device=device)]
        for matched in indices:
            weight = torch.zeros((), dtype=torch.float64, device=device)
            for target, (src, tgt) in zip(targets, matched):
                labels = target["labels"][tgt.to(target["labels"].device)]
                weight = weight + self.empty_weight[labels].double().sum()
                weight = weight + (num_queries - len(src)) * eos
            local.append(weight)
        totals = torch.stack(local)
        world_size = get_world_size()
        if (
            world_size > 1
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            torch.distributed.all_reduce(totals)
        totals = totals.tolist()
        return max(totals[0], 1.0) / world_size, [w / world_size for w in totals[1:]]

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
