"""MaskFormerPanopticDatasetMapper ("mask_former_panoptic"): panoptic dicts (file_name,
pan_seg_file_name, segments_info, optional sem_seg_file_name) -> image and one mask target per
non-crowd segment (stuff and things), plus sem_seg when the dict has it."""

from __future__ import annotations

import copy

import numpy as np
import torch
from detectron2.data import transforms as T

from ..formats import panoptic_to_semantic
from .common import (
    IMAGE_PAD_VALUE,
    image_to_tensor,
    label_to_tensor,
    make_instances,
    pad_bottom_right,
    panoptic_targets,
    pop_panoptic_inputs,
    read_label_map,
    transform_label,
)
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper

__all__ = ["MaskFormerPanopticDatasetMapper"]


class MaskFormerPanopticDatasetMapper(MaskFormerSemanticDatasetMapper):
    """Panoptic segmentation mapper of Mask2Former (same augmentations and padding as the
    semantic one; the crop's class-area constraint uses the semantic labels, read from
    sem_seg_file_name or derived from the panoptic PNG).

    Output (see `common`): "image", "instances" (gt_classes, gt_masks: one per non-crowd
    segment still visible after augmentation), and "sem_seg" when the dict has
    sem_seg_file_name.
    """

    def __call__(self, dataset_dict: dict) -> dict:
        """
        Args:
            dataset_dict: one dict of a panoptic dataset (see `load_coco_panoptic_json`).

        Returns:
            The dict with "image", "instances" (and "sem_seg", height/width).
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image, pan_ids, segments_info, sem_file = pop_panoptic_inputs(self, dataset_dict)
        if sem_file is not None:
            sem_seg = read_label_map(sem_file)
        else:  # only for the crop's class-area constraint
            sem_seg = panoptic_to_semantic(
                pan_ids,
                segments_info,
                {int(s["category_id"]): int(s["category_id"]) for s in segments_info},
                ignore_label=self.ignore_label,
                dtype=np.float64,
            )
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        image, sem_seg = aug_input.image, aug_input.sem_seg
        pan_ids = transform_label(transforms, pan_ids, 0).astype(np.int64)

        image_t = pad_bottom_right(image_to_tensor(image), self.size_divisibility, IMAGE_PAD_VALUE)
        ids_t = pad_bottom_right(torch.as_tensor(pan_ids), self.size_divisibility, 0)
        classes, masks = panoptic_targets(ids_t.numpy(), segments_info)
        dataset_dict["image"] = image_t
        dataset_dict["instances"] = make_instances(tuple(image_t.shape[-2:]), classes, masks)
        if sem_file is not None:
            sem_t = label_to_tensor(sem_seg)
            sem_t = pad_bottom_right(sem_t, self.size_divisibility, self.ignore_label)
            dataset_dict["sem_seg"] = sem_t
        return dataset_dict
