"""COCOInstanceNewBaselineDatasetMapper ("coco_instance_lsj"): COCO-style instance dicts with
large-scale jitter -> image and mask + box targets per non-crowd instance."""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import transforms as T

from .common import (
    image_to_tensor,
    lsj_augmentations,
    make_instances,
    read_image,
    segmentation_to_mask,
    transform_label,
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
        if "annotations" not in dataset_dict:
            raise ValueError(
                f"{type(self).__name__}: the dict of '{dataset_dict.get('file_name')}' has no "
                "'annotations'; use an instance dataset or another INPUT.DATASET_MAPPER_NAME"
            )
        image = read_image(dataset_dict, self.image_format)
        h0, w0 = image.shape[:2]
        annos = [a for a in dataset_dict.pop("annotations") if not a.get("iscrowd", 0)]
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image_t = image_to_tensor(aug_input.image)
        masks = [
            torch.as_tensor(
                np.array(
                    transform_label(transforms, segmentation_to_mask(a["segmentation"], h0, w0), 0),
                    dtype=bool,
                )
            )
            for a in annos
        ]
        classes = [int(a["category_id"]) for a in annos]
        dataset_dict["image"] = image_t
        dataset_dict["instances"] = make_instances(
            tuple(image_t.shape[-2:]), classes, masks, with_boxes=True
        )
        return dataset_dict
