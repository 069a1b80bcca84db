"""COCOInstanceNewBaselineDatasetMapper ("coco_instance_lsj"): COCO-style instance dicts with
large-scale jitter -> image and mask + box targets per non-crowd instance."""

from __future__ import annotations

from detectron2.config import CfgNode, configurable

from .common import lsj_augmentations
from .mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper

__all__ = ["COCOInstanceNewBaselineDatasetMapper"]


class COCOInstanceNewBaselineDatasetMapper(MaskFormerInstanceDatasetMapper):
    """Instance mapper with large-scale jitter (Mask2Former's COCO "new baseline"): the
    instance mapper's targets plus gt_boxes, with no padding of its own.

    Training: flip, ResizeScale(INPUT.MIN_SCALE, INPUT.MAX_SCALE, INPUT.IMAGE_SIZE),
    FixedSizeCrop(INPUT.IMAGE_SIZE) which pads smaller images at the bottom/right, so every
    image is IMAGE_SIZE x IMAGE_SIZE. Test (`is_train=False`): test resize only.

    Output (see `common`): "image", "instances" with gt_classes, gt_masks and gt_boxes (crowd
    annotations and instances cropped away are dropped).
    """

    with_boxes = True

    @configurable
    def __init__(self, is_train: bool = True, *, augmentations: list, image_format: str):
        """
        Args:
            is_train: training or test mode.
            augmentations: detectron2 augmentations, applied in order.
            image_format: INPUT.FORMAT ("RGB" or "BGR").
        """
        # FixedSizeCrop already pads to IMAGE_SIZE; no size-divisibility padding here
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            size_divisibility=-1,
        )

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict:
        return {
            "is_train": is_train,
            "augmentations": lsj_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
        }
