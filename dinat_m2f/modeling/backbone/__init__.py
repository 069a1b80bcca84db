"""Backbones registered in detectron2's BACKBONE_REGISTRY."""

from . import dinat as _dinat
from .dinat import D2DiNAT, D2DiNATs, DiNAT, DiNATs
from .fpn import build_dinat_fpn_backbone, build_dinat_s_fpn_backbone, build_nat_fpn_backbone
from .swin import D2SwinTransformer, SwinTransformer
from .torchvision_swin import D2TorchvisionSwin

# The named models (dinat_tiny, nat_base, dinat_large_k11, dinat_s_small, ...) by name.
MODEL_CONSTRUCTORS = {
    name: getattr(_dinat, name)
    for name in dir(_dinat)
    if name.startswith(("dinat_", "nat_")) and callable(getattr(_dinat, name))
}

__all__ = [
    "MODEL_CONSTRUCTORS",
    "D2DiNAT",
    "D2DiNATs",
    "D2SwinTransformer",
    "D2TorchvisionSwin",
    "DiNAT",
    "DiNATs",
    "SwinTransformer",
    "build_dinat_fpn_backbone",
    "build_dinat_s_fpn_backbone",
    "build_nat_fpn_backbone",
]
