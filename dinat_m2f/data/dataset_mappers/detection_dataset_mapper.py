"""The R-CNN detectors' mapper: detectron2's `DatasetMapper` (boxes, classes and, with
MODEL.MASK_ON, instance masks in INPUT.MASK_FORMAT) with the DiNAT detection release's
multi-scale training (`build_detection_augmentation`)."""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T

from ..augmentations import ResizeShortestEdge
from .common import flip_augmentation


def build_detection_augmentation(cfg: CfgNode, is_train: bool) -> list[T.Augmentation]:
    """detectron2's resize (INPUT.MIN_SIZE_*, MAX_SIZE_*) and flip (INPUT.RANDOM_FLIP),
    preceded in training by

    - INPUT.DETR_CROP (when enabled): with probability PROB, a resize to a short side in
      MIN_SIZE (long side <= INPUT.MAX_SIZE_TRAIN) and a RandomCrop(TYPE, SIZE); the resize
      that follows brings every image back to a short side in INPUT.MIN_SIZE_TRAIN. This is
      the release's two-policy AutoAugment: (flip, resize 480..800) or (flip, resize 400..600,
      crop 384..600, resize 480..800), each chosen with probability 0.5;
    - else INPUT.CROP (when enabled), as detectron2's DatasetMapper does.
    """
    # detectron2's build_augmentation, with a resize that keeps every side >= 1 pixel
    if is_train:
        sizes = (
            cfg.INPUT.MIN_SIZE_TRAIN,
            cfg.INPUT.MAX_SIZE_TRAIN,
            cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
        )
    else:
        sizes = (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")
    augs = [ResizeShortestEdge(*sizes)] + (flip_augmentation(cfg) if is_train else [])
    if not is_train:
        return augs
    crop = cfg.INPUT.DETR_CROP
    if crop.ENABLED:
        if cfg.INPUT.CROP.ENABLED:
            raise ValueError(
                "INPUT.DETR_CROP.ENABLED and INPUT.CROP.ENABLED are both set; the DETR crop "
                "branch replaces detectron2's crop, enable one of them"
            )
        if not 0.0 <= crop.PROB <= 1.0:
            raise ValueError(f"INPUT.DETR_CROP.PROB must be in [0, 1], got {crop.PROB}")
        branch = T.AugmentationList(
            [
                ResizeShortestEdge(crop.MIN_SIZE, cfg.INPUT.MAX_SIZE_TRAIN, sample_style="choice"),
                T.RandomCrop(crop.TYPE, crop.SIZE),
            ]
        )
        augs.insert(0, T.RandomApply(branch, prob=crop.PROB))
    elif cfg.INPUT.CROP.ENABLED:
        augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    return augs


class DetectionDatasetMapper(DatasetMapper):
    """detectron2's DatasetMapper with `build_detection_augmentation`; in training, boxes are
    recomputed from the cropped masks when masks are on and images may be cropped."""

    def __init__(self, cfg: CfgNode, is_train: bool = True) -> None:
        crops = is_train and (cfg.INPUT.DETR_CROP.ENABLED or cfg.INPUT.CROP.ENABLED)
        super().__init__(
            cfg,
            is_train,
            augmentations=build_detection_augmentation(cfg, is_train),
            recompute_boxes=bool(crops and cfg.MODEL.MASK_ON),
        )
