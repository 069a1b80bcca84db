"""MaskFormerSemanticDatasetMapper ("mask_former_semantic"): semantic segmentation dicts
(file_name + sem_seg_file_name) -> image, sem_seg and per-class mask targets."""

from __future__ import annotations

import copy

import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import transforms as T

from .common import (
    IMAGE_PAD_VALUE,
    AugmentingMapper,
    ignore_label_of,
    image_to_tensor,
    label_to_tensor,
    make_instances,
    maskformer_augmentations,
    pad_bottom_right,
    read_image,
    read_label_map,
)

__all__ = ["MaskFormerSemanticDatasetMapper"]


class MaskFormerSemanticDatasetMapper(AugmentingMapper):
    """Semantic segmentation mapper of Mask2Former.

    Training: resize the shortest edge, random crop in which no class covers more than
    INPUT.CROP.SINGLE_CATEGORY_MAX_AREA (up to 10 tries), ColorAugSSD, flip, then pad to
    INPUT.SIZE_DIVISIBILITY. Test (`is_train=False`): test resize only, no padding.

    Output (see `common` for the contract): "image" (3, H, W) uint8, "sem_seg" (H, W) int64
    (padding = ignore label), "instances" with one mask per class present (ignore excluded).
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        ignore_label: int,
        size_divisibility: int,
    ):
        """
        Args:
            is_train: training (augment, pad) or test mode.
            augmentations: detectron2 augmentations, applied in order.
            image_format: INPUT.FORMAT ("RGB" or "BGR").
            ignore_label: label of void pixels (also the padding of "sem_seg").
            size_divisibility: pad height/width to multiples of this (<= 0: no padding).
        """
        super().__init__(is_train, augmentations, image_format)
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict:
        ignore_label = ignore_label_of(cfg, is_train)
        return {
            "is_train": is_train,
            "augmentations": maskformer_augmentations(cfg, is_train, ignore_label, True),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY if is_train else -1,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        """
        Args:
            dataset_dict: one dict of a semantic dataset (file_name, sem_seg_file_name).

        Returns:
            The dict with "image", "sem_seg", "instances" (and height/width).
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        if "sem_seg_file_name" not in dataset_dict:
            raise ValueError(
                f"{type(self).__name__}: the dict of '{dataset_dict.get('file_name')}' has no "
                "'sem_seg_file_name'; use a semantic dataset (e.g. *_sem_seg_*) or another "
                "INPUT.DATASET_MAPPER_NAME"
            )
        image = read_image(dataset_dict, self.image_format)
        sem_seg = read_label_map(dataset_dict.pop("sem_seg_file_name"))
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        self.augmentations(aug_input)
        image, sem_seg = aug_input.image, aug_input.sem_seg

        image_t = pad_bottom_right(image_to_tensor(image), self.size_divisibility, IMAGE_PAD_VALUE)
        sem_t = label_to_tensor(sem_seg)
        sem_t = pad_bottom_right(sem_t, self.size_divisibility, self.ignore_label)

        classes = [int(c) for c in torch.unique(sem_t).tolist() if c != self.ignore_label]
        dataset_dict["image"] = image_t
        dataset_dict["sem_seg"] = sem_t
        dataset_dict["instances"] = make_instances(
            tuple(image_t.shape[-2:]), classes, [sem_t == c for c in classes]
        )
        return dataset_dict
