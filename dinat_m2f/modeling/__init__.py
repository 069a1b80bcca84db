"""Models registered in detectron2 (importing this module registers them): the DiNAT / NAT /
DiNAT_s backbones, the MSDeformAttn pixel decoder, the masked-attention transformer decoder,
the MaskFormerHead and the MaskFormer meta-architecture."""

from . import backbone  # noqa: F401
from . import meta_arch  # noqa: F401
from . import pixel_decoder  # noqa: F401
from . import transformer_decoder  # noqa: F401
