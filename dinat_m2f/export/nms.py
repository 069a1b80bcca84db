"""Class-wise non-maximum suppression as one op, `dinat_m2f_export::batched_nms`, so that an
exported detector keeps it as a single graph node (ONNX: `NonMaxSuppression` with one score
row per class, onnx_ops.py).

torchvision's `batched_nms` (which detectron2 calls) picks its algorithm in Python from the
number of boxes (a loop over the classes present above 1000 boxes on the CPU, else one NMS
over boxes shifted apart per class), which torch.export cannot trace on a size known only at
run time. This op is the loop's result (the exact class-wise NMS); the shifted form agrees with
it except where the float32 rounding of the shifted coordinates moves an IoU across the
threshold.
"""

from __future__ import annotations

import torch
import torchvision

NAMESPACE = "dinat_m2f_export"


@torch.library.custom_op(f"{NAMESPACE}::batched_nms", mutates_args=())
def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    num_classes: int,
    iou_threshold: float,
) -> torch.Tensor:
    """Indices (K,) int64 of the boxes kept by NMS within each class (boxes overlapping a
    higher-scoring box of their class with IoU > iou_threshold are dropped), by decreasing
    score. Classes are in [0, num_classes) (the ONNX form has one score row per class).

    Shape: boxes (N, 4) x0, y0, x1, y1; scores (N,); classes (N,) int64.
    """
    keep = torch.zeros_like(scores, dtype=torch.bool)
    for label in torch.unique(classes):
        members = torch.where(classes == label)[0]
        kept = torchvision.ops.nms(boxes[members].float(), scores[members], iou_threshold)
        keep[members[kept]] = True
    kept = torch.where(keep)[0]
    return kept[scores[kept].sort(descending=True)[1]]


@batched_nms.register_fake
def _(boxes, scores, classes, num_classes, iou_threshold):
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count,), dtype=torch.int64)


__all__ = ["NAMESPACE", "batched_nms"]
