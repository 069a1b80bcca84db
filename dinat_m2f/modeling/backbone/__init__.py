"""Backbones registered in detectron2's BACKBONE_REGISTRY."""

from .d2_dinat import D2DiNAT
from .dinat import DiNAT
from .dinat_s import D2DiNATs, DiNATs

__all__ = ["D2DiNAT", "D2DiNATs", "DiNAT", "DiNATs"]
