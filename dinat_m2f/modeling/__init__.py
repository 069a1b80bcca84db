"""Models registered in detectron2 (importing this module registers them): the DiNAT / NAT /
DiNAT_s backbones (alone and with an FPN), the MSDeformAttn pixel decoder, the masked-attention
transformer decoder, the MaskFormerHead, the MaskFormer meta-architecture, and the per-stage-mask
Cascade R-CNN ROI heads."""

from . import backbone  # noqa: F401
from . import meta_arch  # noqa: F401
from . import pixel_decoder  # noqa: F401
from . import roi_heads  # noqa: F401
from . import transformer_decoder  # noqa: F401
