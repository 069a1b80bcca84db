"""COCOPanopticNewBaselineDatasetMapper ("coco_panoptic_lsj"): panoptic dicts with large-scale
jitter -> image and mask + box targets per non-crowd segment (and sem_seg when present)."""

from __future__ import annotations

import copy

import numpy as np
from detectron2.config import CfgNode, configurable
from detectron2.data import transforms as T

from .common import (
    AugmentingMapper,
    ignore_label_of,
    image_to_tensor,
    label_to_tensor,
    lsj_augmentations,
    make_instances,
    panoptic_targets,
    pop_panoptic_inputs,
    read_label_map,
    transform_label,
)

__all__ = ["COCOPanopticNewBaselineDatasetMapper"]


class COCOPanopticNewBaselineDatasetMapper(AugmentingMapper):
    """Panoptic mapper with large-scale jitter (Mask2Former's COCO "new baseline").

    Training: flip, ResizeScale(INPUT.MIN_SCALE, INPUT.MAX_SCALE, INPUT.IMAGE_SIZE),
    FixedSizeCrop(INPUT.IMAGE_SIZE) (padded at the bottom/right: image 128, no segment, sem_seg
    ignore). Test (`is_train=False`): test resize only.

    Output (see `common`): "image", "instances" with gt_classes, gt_masks and gt_boxes (one per
    non-crowd segment still visible), "sem_seg" when the dict has sem_seg_file_name.
    """

    @configurable
    def __init__(
        self, is_train: bool = True, *, augmentations: list, image_format: str, ignore_label: int
    ):
        """
        Args:
            is_train: training or test mode.
            augmentations: detectron2 augmentations, applied in order.
            image_format: INPUT.FORMAT ("RGB" or "BGR").
            ignore_label: padding value of "sem_seg".
        """
        super().__init__(is_train, augmentations, image_format)
        self.ignore_label = ignore_label

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict:
        return {
            "is_train": is_train,
            "augmentations": lsj_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label_of(cfg, is_train),
        }

    def __call__(self, dataset_dict: dict) -> dict:
        """
        Args:
            dataset_dict: one dict of a panoptic dataset (see `load_coco_panoptic_json`).

        Returns:
            The dict with "image", "instances" (and "sem_seg", height/width).
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image, pan_ids, segments_info, sem_file = pop_panoptic_inputs(self, dataset_dict)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image_t = image_to_tensor(aug_input.image)
        pan_ids = transform_label(transforms, pan_ids, 0).astype(np.int64)
        classes, masks = panoptic_targets(pan_ids, segments_info)
        dataset_dict["image"] = image_t
        dataset_dict["instances"] = make_instances(
            tuple(image_t.shape[-2:]), classes, masks, with_boxes=True
        )
        if sem_file is not None:
            sem = transform_label(transforms, read_label_map(sem_file), self.ignore_label)
            dataset_dict["sem_seg"] = label_to_tensor(sem)
        return dataset_dict
