"""COCOInstanceNewBaselineDatasetMapper ("coco_instance_lsj"): COCO-style instance dicts with
large-scale jitter -> image and mask + box targets per non-crowd instance."""

from __future__ import annotations

import copy
import logging

from detectron2.config import CfgNode, configurable
from detectron2.data import transforms as T

from .common import (
    augment_instance_annotations,
    image_to_tensor,
    lsj_augmentations,
    make_instances,
    require_fields,
)

__all__ = ["COCOInstanceNewBaselineDatasetMapper"]


class COCOInstanceNewBaselineDatasetMapper:
    """Instance mapper with large-scale jitter (Mask2Former's COCO "new baseline").

    Training: flip, ResizeScale(INPUT.MIN_SCALE, INPUT.MAX_SCALE, INPUT.IMAGE_SIZE),
    FixedSizeCrop(INPUT.IMAGE_SIZE) which pads smaller images at the bottom/right, so every
    image is IMAGE_SIZE x IMAGE_SIZE. Test (`is_train=False`): test resize only.

    Output (see `common`): "image", "instances" with gt_classes, gt_masks and gt_boxes (crowd
    annotations and instances cropped away are dropped).
    """

    @configurable
    def __init__(self, is_train: bool = True, *, augmentations: list, image_format: str):
        """
        Args:
            is_train: training or test mode.
            augmentations: detectron2 augmentations, applied in order.
            image_format: INPUT.FORMAT ("RGB" or "BGR").
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        mode = "training" if is_train else "inference"
        logging.getLogger(__name__).info(f"{type(self).__name__} ({mode}): {augmentations}")

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict:
        return {
            "is_train": is_train,
            "augmentations": lsj_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        """
        Args:
            dataset_dict: one dict of a COCO-format instance dataset.

        Returns:
            The dict with "image", "instances" (and height/width); "annotations" removed.
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        require_fields(self, dataset_dict, ["annotations"], "an instance")
        image, masks, classes = augment_instance_annotations(
            dataset_dict, self.image_format, self.augmentations
        )
        image_t = image_to_tensor(image)
        dataset_dict["image"] = image_t
        dataset_dict["instances"] = make_instances(
            tuple(image_t.shape[-2:]), classes, masks, with_boxes=True
        )
        return dataset_dict
