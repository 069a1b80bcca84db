"""Mask2Former meta-architecture (META_ARCH_REGISTRY "MaskFormer") and its head
(SEM_SEG_HEADS_REGISTRY "MaskFormerHead")."""

from .mask_former_head import MaskFormerHead
from .mask_former_inference import instance_inference, panoptic_inference, semantic_inference
from .mask_former_model import MaskFormer

__all__ = [
    "MaskFormer",
    "MaskFormerHead",
    "instance_inference",
    "panoptic_inference",
    "semantic_inference",
]
