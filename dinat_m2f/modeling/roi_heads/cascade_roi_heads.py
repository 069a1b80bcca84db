"""Cascade Mask R-CNN ROI heads with a mask head per stage (`StageMaskCascadeROIHeads`).

detectron2's `CascadeROIHeads` has one mask head, trained on the first stage's proposals, and
class-agnostic box regression only. The DiNAT detection release (mmdetection's
`CascadeRoIHead`) differs, and so does this class:

- a mask head per stage (`mask_head.{i}`), trained on that stage's foreground proposals; at
  test time every stage's head runs on the final boxes and the mask probabilities are
  averaged;
- class-specific box regression is allowed (the release's 4conv1fc heads use it): the
  proposals of the next stage take the box of the ground-truth class (foreground proposals in
  training) or of the highest-scoring foreground class;
- the box and mask losses of stage i are weighted by
  MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS[i], and the pooled features' gradients are
  not rescaled (detectron2 scales them by 1 / stages instead of weighting the losses);
- test-time class scores are the softmax of the stages' averaged logits (detectron2 averages
  the stages' probabilities).

Unchanged from detectron2: stages after the first use every refined proposal of the previous
stage (mmdetection samples 512 again and re-adds the ground-truth boxes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    CascadeROIHeads,
    FastRCNNOutputLayers,
    build_box_head,
    build_mask_head,
    select_foreground_proposals,
)
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils.events import get_event_storage
from torch import nn


@ROI_HEADS_REGISTRY.register()
class StageMaskCascadeROIHeads(CascadeROIHeads):
    """Cascade R-CNN ROI heads as in the DiNAT detection release (see the module docstring).

    Args (besides `CascadeROIHeads`'):
        stage_loss_weights: weight of each stage's losses, one per stage.
        mask_head: with masks on, an `nn.ModuleList` of one mask head per stage.
    """

    @configurable
    def __init__(self, *, stage_loss_weights: list[float], **kwargs) -> None:
        super().__init__(**kwargs)
        if len(stage_loss_weights) != self.num_cascade_stages:
            raise ValueError(
                f"MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS = {list(stage_loss_weights)} "
                f"needs one weight per stage ({self.num_cascade_stages}, the length of "
                "MODEL.ROI_BOX_CASCADE_HEAD.IOUS)"
            )
        if self.mask_on and len(self.mask_head) != self.num_cascade_stages:
            raise ValueError(
                f"{type(self).__name__}: {len(self.mask_head)} mask heads for "
                f"{self.num_cascade_stages} stages"
            )
        self.stage_loss_weights = [float(w) for w in stage_loss_weights]

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["stage_loss_weights"] = list(cfg.MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS)
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        """detectron2's cascade box heads, without its class-agnostic-only restriction."""
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        weights = cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS
        ious = cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS
        if len(weights) != len(ious):
            raise ValueError(
                f"MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS ({len(weights)} entries) and IOUS "
                f"({len(ious)}) must have one entry per stage"
            )
        if ious[0] != cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS[0]:
            raise ValueError(
                f"MODEL.ROI_BOX_CASCADE_HEAD.IOUS[0] = {ious[0]} must equal "
                f"MODEL.ROI_HEADS.IOU_THRESHOLDS[0] = {cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS[0]} "
                "(the first stage's proposals are sampled with the latter)"
            )
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(
                f"MODEL.ROI_HEADS.IN_FEATURES {in_features} differ in width: {channels}"
            )
        box_pooler = ROIPooler(
            output_size=resolution,
            scales=tuple(1.0 / input_shape[f].stride for f in in_features),
            sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
            pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
        )
        pooled = ShapeSpec(channels=channels.pop(), width=resolution, height=resolution)
        box_heads, box_predictors, matchers = [], [], []
        for iou, reg_weights in zip(ious, weights):
            head = build_box_head(cfg, pooled)
            box_heads.append(head)
            box_predictors.append(
                FastRCNNOutputLayers(
                    cfg, head.output_shape, box2box_transform=Box2BoxTransform(weights=reg_weights)
                )
            )
            matchers.append(Matcher([iou], [0, 1], allow_low_quality_matches=False))
        return {
            "box_in_features": in_features,
            "box_pooler": box_pooler,
            "box_heads": box_heads,
            "box_predictors": box_predictors,
            "proposal_matchers": matchers,
        }

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        """One mask head per stage, sharing one ROI pooler."""
        if not cfg.MODEL.MASK_ON:
            return {}
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        resolution = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
        if not cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE:
            raise ValueError(f"{cls.__name__} needs MODEL.ROI_MASK_HEAD.POOLER_TYPE (got '')")
        pooler = ROIPooler(
            output_size=resolution,
            scales=tuple(1.0 / input_shape[f].stride for f in in_features),
            sampling_ratio=cfg.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO,
            pooler_type=cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE,
        )
        shape = ShapeSpec(
            channels=input_shape[in_features[0]].channels, width=resolution, height=resolution
        )
        stages = len(cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS)
        return {
            "mask_in_features": in_features,
            "mask_pooler": pooler,
            "mask_head": nn.ModuleList(build_mask_head(cfg, shape) for _ in range(stages)),
        }

    # ------------------------------------------------------------------------------------
    def forward(self, images, features, proposals, targets=None):
        del images
        if not self.training:
            instances = self._forward_box(features, proposals)
            return self.forward_with_given_boxes(features, instances), {}
        proposals = self.label_and_sample_proposals(proposals, targets)
        losses, stage_proposals = self._forward_box(features, proposals, targets)
        if self.mask_on:
            for stage, stage_props in enumerate(stage_proposals):
                loss = self._stage_mask_loss(features, stage_props, stage)
                losses[f"loss_mask_stage{stage}"] = loss * self.stage_loss_weights[stage]
        losses.update(self._forward_keypoint(features, proposals))
        return proposals, losses

    def _forward_box(self, features, proposals, targets=None):
        """Training: (weighted losses, the proposals of every stage with their gt_* fields);
        inference: the detected instances (boxes of the last stage, averaged scores)."""
        features = [features[f] for f in self.box_in_features]
        image_sizes = [x.image_size for x in proposals]
        outputs = []  # (predictions, proposals) per stage
        prev_boxes: list[torch.Tensor] = []
        for stage in range(self.num_cascade_stages):
            if stage > 0:
                proposals = self._create_proposals_from_boxes(prev_boxes, image_sizes)
                if self.training:
                    proposals = self._match_and_label_boxes(proposals, stage, targets)
            predictions = self._run_stage(features, proposals, stage)
            prev_boxes = self._boxes_for_next_stage(stage, predictions, proposals)
            outputs.append((predictions, proposals))

        if self.training:
            losses = {}
            storage = get_event_storage()
            for stage, (predictions, stage_proposals) in enumerate(outputs):
                with storage.name_scope(f"stage{stage}"):
                    stage_losses = self.box_predictor[stage].losses(predictions, stage_proposals)
                weight = self.stage_loss_weights[stage]
                losses.update({f"{k}_stage{stage}": v * weight for k, v in stage_losses.items()})
            return losses, [p for _, p in outputs]

        counts = [len(p) for p in proposals]
        logits = sum(predictions[0] for predictions, _ in outputs) / self.num_cascade_stages
        scores = F.softmax(logits, dim=-1).split(counts)
        predictor = self.box_predictor[-1]
        predictions, last_proposals = outputs[-1]
        boxes = predictor.predict_boxes(predictions, last_proposals)
        instances, _ = fast_rcnn_inference(
            boxes,
            scores,
            image_sizes,
            predictor.test_score_thresh,
            predictor.test_nms_thresh,
            predictor.test_topk_per_image,
        )
        return instances

    def _boxes_for_next_stage(self, stage, predictions, proposals) -> list[torch.Tensor]:
        """(R_i, 4) boxes per image: with class-specific regression, the box of the gt class
        (training, foreground) or of the best foreground class by score."""
        boxes = self.box_predictor[stage].predict_boxes(predictions, proposals)
        if boxes[0].shape[1] == 4:  # class-agnostic
            return list(boxes)
        logits = predictions[0].split([len(p) for p in proposals])
        chosen = []
        for boxes_i, logits_i, proposals_i in zip(boxes, logits, proposals):
            classes = logits_i[:, :-1].argmax(dim=1)
            if self.training and proposals_i.has("gt_classes"):
                gt = proposals_i.gt_classes
                classes = torch.where(gt < self.num_classes, gt, classes)
            rows = torch.arange(len(classes), device=boxes_i.device)
            chosen.append(boxes_i.view(len(classes), -1, 4)[rows, classes])
        return chosen

    def _run_stage(self, features, proposals, stage):
        """Box head of `stage` on the pooled features (no gradient rescaling)."""
        box_features = self.box_pooler(features, [x.proposal_boxes for x in proposals])
        return self.box_predictor[stage](self.box_head[stage](box_features))

    @torch.no_grad()
    def _match_and_label_boxes(self, proposals, stage, targets):
        """detectron2's matching of a later stage's proposals, also copying every gt_* field
        (gt_masks for the stage's mask head) of the matched ground truth."""
        num_fg, num_bg = [], []
        for proposals_i, targets_i in zip(proposals, targets):
            quality = pairwise_iou(targets_i.gt_boxes, proposals_i.proposal_boxes)
            matched, labels = self.proposal_matchers[stage](quality)
            if len(targets_i) > 0:
                for name, value in targets_i.get_fields().items():
                    if name.startswith("gt_"):
                        proposals_i.set(name, value[matched])
                gt_classes = proposals_i.gt_classes.clone()
                gt_classes[labels == 0] = self.num_classes
            else:
                gt_classes = torch.full_like(matched, self.num_classes)
                proposals_i.gt_boxes = Boxes(quality.new_zeros((len(proposals_i), 4)))
            proposals_i.gt_classes = gt_classes
            num_fg.append((labels == 1).sum().item())
            num_bg.append(labels.numel() - num_fg[-1])
        storage = get_event_storage()
        storage.put_scalar(f"stage{stage}/roi_head/num_fg_samples", sum(num_fg) / len(num_fg))
        storage.put_scalar(f"stage{stage}/roi_head/num_bg_samples", sum(num_bg) / len(num_bg))
        return proposals

    # ------------------------------------------------------------------------------------
    def _stage_mask_loss(self, features, proposals, stage) -> torch.Tensor:
        """Mask loss of `stage`'s head on that stage's foreground proposals."""
        foreground, _ = select_foreground_proposals(proposals, self.num_classes)
        pooled = self.mask_pooler(
            [features[f] for f in self.mask_in_features], [x.proposal_boxes for x in foreground]
        )
        return self.mask_head[stage](pooled, foreground)["loss_mask"]

    def _forward_mask(self, features, instances):
        """Inference: every stage's mask head on the detected boxes; `pred_masks` (R, 1, M, M)
        is the mean of their probabilities for the predicted class."""
        if not self.mask_on:
            return instances
        if self.training:
            raise RuntimeError(f"{type(self).__name__}: mask losses come from forward()")
        pooled = self.mask_pooler(
            [features[f] for f in self.mask_in_features], [x.pred_boxes for x in instances]
        )
        counts = [len(x) for x in instances]
        if sum(counts) == 0:
            side = 2 * pooled.shape[-1]
            for x in instances:
                x.pred_masks = pooled.new_zeros((0, 1, side, side))
            return instances
        classes = cat([x.pred_classes for x in instances])
        rows = torch.arange(len(classes), device=pooled.device)
        probs = 0
        for head in self.mask_head:
            logits = head.layers(pooled)
            if logits.shape[1] > 1:  # class-specific masks
                logits = logits[rows, classes][:, None]
            probs = probs + logits.sigmoid()
        probs = probs / len(self.mask_head)
        for x, masks in zip(instances, probs.split(counts)):
            x.pred_masks = masks
        return instances
