"""What goes into an exported graph, per model family: the network from a normalised, padded
image to its raw outputs. Everything after (resizing, semantic / panoptic / instance
inference, pasting masks) is the numpy post-processing of `deploy/postprocess.py`.

- Mask2Former (`MaskFormer`): image (1, 3, H, W) -> class logits (1, Q, K + 1) and mask
  logits (1, Q, H / 4, W / 4), the transformer decoder's last prediction.
- R-CNN detectors (`GeneralizedRCNN` with an RPN and StandardROIHeads or
  StageMaskCascadeROIHeads, masks on): image (1, 3, H, W) and image_size (2,) -> boxes,
  scores, classes and mask probabilities per detection (rcnn.py, an inference path written
  for tracing).

H and W are those of the padded input (multiples of the size divisibility).
"""

from __future__ import annotations

import torch
from detectron2.modeling import GeneralizedRCNN
from torch import nn

from ..modeling.meta_arch.mask_former_model import MaskFormer
from .rcnn import RCNNGraph, check_rcnn


class NotExportableError(ValueError):
    """A model, module or option the exporter cannot put into a graph; the message names it."""


class MaskFormerGraph(nn.Module):
    """Mask2Former's network: (1, 3, H, W) normalised image -> (class logits, mask logits)."""

    input_names = ("image",)
    output_names = ("class_logits", "mask_logits")

    def __init__(self, model: MaskFormer) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.sem_seg_head = model.sem_seg_head

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.sem_seg_head(self.backbone(image))
        return outputs["pred_logits"], outputs["pred_masks"]


def graph_of(model: nn.Module) -> MaskFormerGraph | RCNNGraph:
    """The exportable network of `model`, or NotExportableError naming what is not supported."""
    if isinstance(model, MaskFormer):
        return MaskFormerGraph(model)
    if isinstance(model, GeneralizedRCNN):
        reason = check_rcnn(model)
        if reason is not None:
            raise NotExportableError(f"model GeneralizedRCNN cannot be exported: {reason}")
        return RCNNGraph(model)
    raise NotExportableError(
        f"model {type(model).__name__} (MODEL.META_ARCHITECTURE) cannot be exported; "
        "supported: MaskFormer (Mask2Former), GeneralizedRCNN (Mask R-CNN, Cascade Mask R-CNN)"
    )
