"""DiNAT (Dilated Neighborhood Attention Transformer) with Mask2Former for detectron2.

Like `import mask2former`, importing the package registers everything with detectron2: the
models (D2DiNAT, D2DiNATs, D2SwinTransformer, D2TorchvisionSwin, MSDeformAttnPixelDecoder,
MultiScaleMaskedTransformerDecoder, MaskFormerHead, MaskFormer) and the datasets (COCO, ADE20K,
Cityscapes, Mapillary Vistas, the built-in shapes); and it exposes the config functions:

    from dinat_m2f import add_deeplab_config, add_maskformer2_config, add_dinat_config

Submodules import each other directly (`from ..config import ...`), never this package, so
there is no import cycle.
"""

__version__ = "0.1.0"

from . import (
    data,  # noqa: F401,E402  (registers the datasets)
    modeling,  # noqa: F401,E402  (registers the models)
)
from .config import (  # noqa: E402
    add_deeplab_config,
    add_dinat_config,
    add_maskformer2_config,
    add_tvswin_config,
    default_cfg,
)
from .modeling.meta_arch.mask_former_model import MaskFormer  # noqa: E402
from .modeling.semantic_tta import SemanticSegmentorWithTTA  # noqa: E402

__all__ = [
    "MaskFormer",
    "SemanticSegmentorWithTTA",
    "__version__",
    "add_deeplab_config",
    "add_dinat_config",
    "add_maskformer2_config",
    "add_tvswin_config",
    "default_cfg",
]
