"""MaskFormerInstanceDatasetMapper ("mask_former_instance"): COCO-style instance dicts
(file_name + annotations with polygon or RLE segmentations) -> image and one mask target per
non-crowd instance."""

from __future__ import annotations

import copy

from detectron2.config import CfgNode, configurable

from .common import (
    IMAGE_PAD_VALUE,
    AugmentingMapper,
    augment_instance_annotations,
    ignore_label_of,
    image_to_tensor,
    make_instances,
    maskformer_augmentations,
    pad_bottom_right,
    require_fields,
)

__all__ = ["MaskFormerInstanceDatasetMapper"]


class MaskFormerInstanceDatasetMapper(AugmentingMapper):
    """Instance segmentation mapper of Mask2Former.

    Training: resize the shortest edge, random crop (INPUT.CROP.*), ColorAugSSD, flip, pad to
    INPUT.SIZE_DIVISIBILITY. Test (`is_train=False`): test resize only, no padding.

    Output (see `common`): "image", "instances" with gt_classes and gt_masks (crowd
    annotations and instances cropped away are dropped); also gt_boxes when the class sets
    `with_boxes` (the large-scale-jitter subclass).
    """

    with_boxes = False

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        size_divisibility: int,
    ):
        """
        Args:
            is_train: training (augment, pad) or test mode.
            augmentations: detectron2 augmentations, applied in order.
            image_format: INPUT.FORMAT ("RGB" or "BGR").
            size_divisibility: pad height/width to multiples of this (<= 0: no padding).
        """
        super().__init__(is_train, augmentations, image_format)
        self.size_divisibility = size_divisibility

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict:
        ignore_label = ignore_label_of(cfg, is_train)
        return {
            "is_train": is_train,
            "augmentations": maskformer_augmentations(cfg, is_train, ignore_label, False),
            "image_format": cfg.INPUT.FORMAT,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY if is_train else -1,
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
        image_t = pad_bottom_right(image_to_tensor(image), self.size_divisibility, IMAGE_PAD_VALUE)
        masks = [pad_bottom_right(m, self.size_divisibility, 0) for m in masks]
        dataset_dict["image"] = image_t
        dataset_dict["instances"] = make_instances(
            tuple(image_t.shape[-2:]), classes, masks, with_boxes=self.with_boxes
        )
        return dataset_dict
