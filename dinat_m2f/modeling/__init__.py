"""Models registered in detectron2 (importing this module registers them): the DiNAT / NAT /
DiNAT_s backbones (alone and with an FPN), the MSDeformAttn pixel decoder, the masked-attention
transformer decoder, the MaskFormerHead, the MaskFormer meta-architecture, and the per-stage-mask
Cascade R-CNN ROI heads."""

from . import (
    backbone,  # noqa: F401
    meta_arch,  # noqa: F401
    pixel_decoder,  # noqa: F401
    roi_heads,  # noqa: F401
    transformer_decoder,  # noqa: F401
)
