"""The inference of detectron2's R-CNN detectors (Mask R-CNN: `StandardROIHeads`; Cascade Mask
R-CNN: dinat_m2f's `StageMaskCascadeROIHeads`) written for tracing, batch size 1.

detectron2's own inference branches in Python on tensor values (`if not valid_mask.all()` in
find_top_rpn_proposals and fast_rcnn_inference_single_image, the NMS algorithm chosen by box
count) and keeps boxes in Python lists of `Instances`, which torch.export cannot trace. This
module runs the same trained submodules (backbone + FPN, RPN head and anchors, box heads and
predictors, mask heads) with the glue written as tensor operations of the same semantics:

- filters that detectron2 applies only when something is to be removed (non-finite boxes or
  scores, empty proposals) are applied always (the same result either way);
- class-wise NMS is one op (nms.py; ONNX NonMaxSuppression), the ROI pooling one
  torchvision `roi_align` per FPN level over the boxes assigned to it (ONNX RoiAlign);
- per-level pre-NMS top-k, post-NMS top-k, score threshold and detections per image are
  detectron2's (MODEL.RPN.PRE/POST_NMS_TOPK_TEST, MODEL.ROI_HEADS.SCORE_THRESH_TEST,
  NMS_THRESH_TEST, TEST.DETECTIONS_PER_IMAGE).

Input: the normalised, zero-padded image (1, 3, H, W) and `image_size` (2,) int64, the height
and width of the image inside the padding (boxes are clipped to it, as detectron2 does).
Outputs (N detections, by decreasing score): boxes (N, 4) x0, y0, x1, y1 in the input's
pixels, scores (N,), classes (N,) int64, and mask probabilities (N, M, M) of the detected
class (M = 2 x MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION) in the box; deploy/postprocess.py scales
them to the original image and pastes the masks as detector_postprocess does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import StandardROIHeads
from torch import nn

from ..modeling.roi_heads import StageMaskCascadeROIHeads
from .nms import batched_nms

# errors name the unsupported part; NotExportableError lives with the graphs (wrappers.py)
SUPPORTED_ROI_HEADS = (StandardROIHeads, StageMaskCascadeROIHeads)


def clip(boxes: torch.Tensor, image_size: torch.Tensor) -> torch.Tensor:
    """(N, 4) boxes clamped to [0, width] x [0, height] (detectron2's Boxes.clip);
    image_size: (2,) height, width."""
    size = image_size.to(boxes.dtype)
    x0 = boxes[:, 0].clamp(min=0).minimum(size[1])
    y0 = boxes[:, 1].clamp(min=0).minimum(size[0])
    x1 = boxes[:, 2].clamp(min=0).minimum(size[1])
    y1 = boxes[:, 3].clamp(min=0).minimum(size[0])
    return torch.stack((x0, y0, x1, y1), dim=-1)


def pool(pooler: ROIPooler, features: list[torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
    """detectron2's ROIPooler for one image: (N, 4) boxes -> (N, C, S, S), each box pooled
    from the FPN level its size assigns it to."""
    rois = torch.cat((boxes.new_zeros((boxes.shape[0], 1)), boxes), dim=1)
    if len(pooler.level_poolers) == 1:
        return pooler.level_poolers[0](features[0], rois)
    sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(
        pooler.canonical_level + torch.log2(sizes / pooler.canonical_box_size + 1e-8)
    )
    levels = torch.clamp(levels, min=pooler.min_level, max=pooler.max_level).to(torch.int64)
    levels = levels - pooler.min_level
    side = pooler.output_size[0]
    output = features[0].new_zeros((boxes.shape[0], features[0].shape[1], side, side))
    for level, level_pooler in enumerate(pooler.level_poolers):
        members = torch.nonzero(levels == level).squeeze(1)
        output = output.index_put((members,), level_pooler(features[level], rois[members]))
    return output


def per_roi(head: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """head(pooled) for (N, C, S, S) pooled boxes, run with one zero box appended and dropped:
    GroupNorm asks whether its batch is empty, which torch.export cannot decide for a box count
    that depends on the data (GuardOnDataDependentSymNode in the cascade's GN box heads); with
    the spare box it never is. Every box is computed on its own, so the others are unchanged."""
    spare = torch.cat((pooled, pooled.new_zeros((1, *pooled.shape[1:]))))
    return head(spare)[:-1]


def best_class_boxes(boxes: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The next cascade stage's proposals (StageMaskCascadeROIHeads._boxes_for_next_stage at
    inference): (R, 4) boxes, or of (R, K * 4) the box of the best foreground class."""
    if boxes.shape[1] == 4:
        return boxes
    best = logits[:, :-1].argmax(dim=1)
    return boxes.view(best.shape[0], -1, 4)[torch.arange(best.shape[0]), best]


class RCNNGraph(nn.Module):
    """A GeneralizedRCNN's inference for one image: (image (1, 3, H, W), image_size (2,)) ->
    (boxes (N, 4), scores (N,), classes (N,), mask probabilities (N, M, M)). See the module
    docstring."""

    output_names = ("boxes", "scores", "classes", "mask_probs")
    input_names = ("image", "image_size")

    def __init__(self, model: GeneralizedRCNN) -> None:
        super().__init__()
        self.backbone = model.backbone
        rpn = model.proposal_generator
        self.rpn_head, self.anchor_generator = rpn.rpn_head, rpn.anchor_generator
        self.rpn_features = list(rpn.in_features)
        self.rpn_transform = rpn.box2box_transform
        self.rpn_nms_thresh = float(rpn.nms_thresh)
        self.pre_nms_topk, self.post_nms_topk = (
            int(rpn.pre_nms_topk[False]),
            int(rpn.post_nms_topk[False]),
        )
        self.min_box_size = float(rpn.min_box_size)
        heads = model.roi_heads
        self.roi_heads = heads
        self.cascade = isinstance(heads, StageMaskCascadeROIHeads)
        predictor = heads.box_predictor[-1] if self.cascade else heads.box_predictor
        self.score_thresh = float(predictor.test_score_thresh)
        self.nms_thresh = float(predictor.test_nms_thresh)
        self.use_sigmoid = bool(getattr(predictor, "use_sigmoid_ce", False))
        self.detections = int(predictor.test_topk_per_image)

    # --- RPN: find_top_rpn_proposals for one image ------------------------------------------
    def proposals(self, features: dict, image_size: torch.Tensor) -> torch.Tensor:
        maps = [features[f] for f in self.rpn_features]
        anchors = self.anchor_generator(maps)
        logits, deltas = self.rpn_head(maps)
        scores, boxes, levels = [], [], []
        for level, (anchors_i, logits_i, deltas_i) in enumerate(zip(anchors, logits, deltas)):
            logits_i = logits_i.permute(0, 2, 3, 1).reshape(-1)  # (Hi * Wi * A,)
            deltas_i = deltas_i.view(1, -1, 4, deltas_i.shape[-2], deltas_i.shape[-1]).permute(
                0, 3, 4, 1, 2
            )
            count = torch.sym_min(logits_i.shape[0], self.pre_nms_topk)
            top_scores, top = logits_i.topk(count)
            decoded = self.rpn_transform.apply_deltas(
                deltas_i.reshape(-1, 4)[top], anchors_i.tensor[top]
            )
            scores.append(top_scores)
            boxes.append(decoded)
            levels.append(torch.full_like(top, level))
        scores, boxes, levels = torch.cat(scores), torch.cat(boxes), torch.cat(levels)
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        boxes = clip(boxes, image_size)
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        keep = valid & (widths > self.min_box_size) & (heights > self.min_box_size)
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        kept = batched_nms(boxes, scores, levels, len(maps), self.rpn_nms_thresh)
        kept = kept[: self.post_nms_topk]
        return boxes[kept]

    # --- box heads --------------------------------------------------------------------------
    def _box_stage(self, features, boxes, stage: int | None):
        heads = self.roi_heads
        pooled = pool(heads.box_pooler, features, boxes)
        if stage is None:
            return heads.box_predictor(per_roi(heads.box_head, pooled))
        return heads.box_predictor[stage](per_roi(heads.box_head[stage], pooled))

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid() if self.use_sigmoid else F.softmax(logits, dim=-1)

    def class_boxes_and_probs(self, features, proposals, image_size):
        """Per proposal: boxes (R, K or 1, 4) and class probabilities (R, K + 1)."""
        heads = self.roi_heads
        if not self.cascade:
            logits, deltas = self._box_stage(features, proposals, None)
            boxes = heads.box_predictor.box2box_transform.apply_deltas(deltas, proposals)
            return boxes, self._probs(logits)
        stage_logits, boxes = [], proposals
        for stage in range(heads.num_cascade_stages):
            logits, deltas = self._box_stage(features, boxes, stage)
            stage_logits.append(logits)
            predicted = heads.box_predictor[stage].box2box_transform.apply_deltas(deltas, boxes)
            if stage + 1 < heads.num_cascade_stages:
                boxes = clip(best_class_boxes(predicted, logits), image_size)
        logits = sum(stage_logits) / heads.num_cascade_stages
        return predicted, F.softmax(logits, dim=-1)

    def detect(self, boxes, probs, image_size):
        """fast_rcnn_inference_single_image: (boxes (N, 4), scores (N,), classes (N,))."""
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(probs).all(dim=1)
        boxes, probs = boxes[valid], probs[valid]
        probs = probs[:, :-1]
        per_class = boxes.shape[1] // 4
        boxes = clip(boxes.reshape(-1, 4), image_size).view(-1, per_class, 4)
        chosen = probs > self.score_thresh
        pairs = chosen.nonzero()  # (row, class) pairs in row-major order
        boxes = boxes[pairs[:, 0], 0] if per_class == 1 else boxes[chosen]
        scores = probs[chosen]
        kept = batched_nms(boxes, scores, pairs[:, 1], probs.shape[1], self.nms_thresh)
        if self.detections >= 0:
            kept = kept[: self.detections]
        return boxes[kept], scores[kept], pairs[kept, 1]

    # --- mask heads -------------------------------------------------------------------------
    def mask_probs(self, features, boxes, classes) -> torch.Tensor:
        heads = self.roi_heads
        pooled = pool(heads.mask_pooler, features, boxes)
        rows = torch.arange(classes.shape[0])
        mask_heads = heads.mask_head if self.cascade else [heads.mask_head]
        total = None
        for head in mask_heads:
            logits = per_roi(head.layers, pooled)  # (N, K or 1, M, M)
            logits = logits[:, 0] if logits.shape[1] == 1 else logits[rows, classes]
            probs = logits.sigmoid()
            total = probs if total is None else total + probs
        return total / len(mask_heads)

    def forward(self, image: torch.Tensor, image_size: torch.Tensor):
        features = self.backbone(image)
        proposals = self.proposals(features, image_size)
        box_features = [features[f] for f in self.roi_heads.box_in_features]
        boxes, probs = self.class_boxes_and_probs(box_features, proposals, image_size)
        boxes, scores, classes = self.detect(boxes, probs, image_size)
        mask_features = [features[f] for f in self.roi_heads.mask_in_features]
        return boxes, scores, classes, self.mask_probs(mask_features, boxes, classes)


def check_rcnn(model: GeneralizedRCNN) -> str | None:
    """Why `model` cannot be exported by RCNNGraph, or None."""
    heads = model.roi_heads
    if model.proposal_generator is None or type(model.proposal_generator).__name__ != "RPN":
        return (
            f"proposal generator {type(model.proposal_generator).__name__} (MODEL.PROPOSAL_"
            "GENERATOR.NAME): only RPN exports"
        )
    if type(heads) not in SUPPORTED_ROI_HEADS:
        return (
            f"ROI heads {type(heads).__name__} (MODEL.ROI_HEADS.NAME): only StandardROIHeads "
            "and StageMaskCascadeROIHeads export"
        )
    if not heads.mask_on:
        return "MODEL.MASK_ON False: the exported detectors output masks (set MODEL.MASK_ON True)"
    if getattr(heads, "keypoint_on", False):
        return "MODEL.KEYPOINT_ON True: keypoint heads do not export"
    if heads.mask_pooler is None:
        return "MODEL.ROI_MASK_HEAD.POOLER_TYPE is empty: the mask head needs a pooler to export"
    return None


__all__ = ["RCNNGraph", "best_class_boxes", "check_rcnn", "clip", "per_roi", "pool"]
