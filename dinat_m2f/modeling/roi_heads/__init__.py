"""ROI heads registered in detectron2's ROI_HEADS_REGISTRY (MODEL.ROI_HEADS.NAME)."""

from .cascade_roi_heads import StageMaskCascadeROIHeads

__all__ = ["StageMaskCascadeROIHeads"]
