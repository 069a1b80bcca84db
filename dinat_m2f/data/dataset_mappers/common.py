"""Pieces shared by the dataset mappers: augmentation lists from the config, label reading,
label transforms with explicit padding values, padding and target construction.

Output contract of every mapper (see each mapper for what it adds):

- "image": (3, H, W) uint8 tensor in `INPUT.FORMAT` channel order;
- "instances": `Instances` of image size (H, W) with "gt_classes" (N,) int64 contiguous class
  ids and "gt_masks" (N, H, W) bool (empty: (0, H, W)); the large-scale-jitter mappers add
  "gt_boxes" (`Boxes`, XYXY absolute, the masks' extents);
- "sem_seg": (H, W) int64 (semantic mapper; panoptic mappers when the dict has
  sem_seg_file_name), void = the dataset's ignore label;
- "height", "width": the original image size; the input dict's other fields are kept.

Masks, labels and the image are transformed together; padding adds rows/columns at the
bottom/right: 128 in the image, the ignore label in "sem_seg", False in the masks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances
from fvcore.transforms.transform import PadTransform, TransformList
from PIL import Image

from ...panoptic_ids import rgb2id
from ..augmentations import ColorAugSSD, RandomFlip, ResizeScale, ResizeShortestEdge
from ..broken_samples import BrokenSampleError, reading

IMAGE_PAD_VALUE = 128


class AugmentingMapper:
    """Base of the Mask2Former mappers: keeps the mode, the augmentations and the image
    format, and logs the augmentations under the subclass's module."""

    def __init__(self, is_train: bool, augmentations: list, image_format: str) -> None:
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        mode = "training" if is_train else "inference"
        logging.getLogger(type(self).__module__).info(
            f"{type(self).__name__} ({mode}): {augmentations}"
        )


# --- config ------------------------------------------------------------------------------
def ignore_label_of(cfg: CfgNode, is_train: bool) -> int:
    """Ignore label of the first training (or test) dataset's metadata, else
    MODEL.SEM_SEG_HEAD.IGNORE_VALUE."""
    names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
    if names:
        meta = MetadataCatalog.get(names[0])
        if hasattr(meta, "ignore_label"):
            return int(meta.ignore_label)
    return int(cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)


def flip_augmentation(cfg: CfgNode) -> list[T.Augmentation]:
    """INPUT.RANDOM_FLIP: "horizontal", "vertical" or "none"."""
    mode = cfg.INPUT.RANDOM_FLIP
    if mode == "none":
        return []
    if mode not in ("horizontal", "vertical"):
        raise ValueError(
            f"INPUT.RANDOM_FLIP={mode!r} is not one of 'horizontal', 'vertical', 'none'"
        )
    return [RandomFlip(horizontal=mode == "horizontal", vertical=mode == "vertical")]


def test_resize(cfg: CfgNode) -> list[T.Augmentation]:
    """Test-time resizing (INPUT.MIN_SIZE_TEST, MAX_SIZE_TEST; no resize when 0)."""
    if cfg.INPUT.MIN_SIZE_TEST <= 0:
        return []
    return [ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]


def maskformer_augmentations(
    cfg: CfgNode, is_train: bool, ignore_label: int, category_area_crop: bool
) -> list[T.Augmentation]:
    """Mask2Former's semantic/panoptic/instance training augmentations: ResizeShortestEdge
    (INPUT.MIN_SIZE_TRAIN, MAX_SIZE_TRAIN, MIN_SIZE_TRAIN_SAMPLING), random crop
    (INPUT.CROP.*; with INPUT.CROP.SINGLE_CATEGORY_MAX_AREA when `category_area_crop`),
    ColorAugSSD (INPUT.COLOR_AUG_SSD), flip (INPUT.RANDOM_FLIP). At test: `test_resize`."""
    if not is_train:
        return test_resize(cfg)
    augs: list[T.Augmentation] = [
        ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        if category_area_crop:
            augs.append(
                T.RandomCrop_CategoryAreaConstraint(
                    cfg.INPUT.CROP.TYPE,
                    cfg.INPUT.CROP.SIZE,
                    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                    ignore_label,
                )
            )
        else:
            augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if cfg.INPUT.COLOR_AUG_SSD:
        augs.append(ColorAugSSD(img_format=cfg.INPUT.FORMAT))
    augs += flip_augmentation(cfg)
    return augs


def lsj_augmentations(cfg: CfgNode, is_train: bool) -> list[T.Augmentation]:
    """Large-scale jitter (COCO "new baseline"): flip (INPUT.RANDOM_FLIP), ResizeScale to
    INPUT.IMAGE_SIZE x U(INPUT.MIN_SCALE, INPUT.MAX_SCALE), FixedSizeCrop to IMAGE_SIZE^2
    (padded at the bottom/right when smaller). At test: `test_resize`."""
    if not is_train:
        return test_resize(cfg)
    size = cfg.INPUT.IMAGE_SIZE
    if not 0 < cfg.INPUT.MIN_SCALE <= cfg.INPUT.MAX_SCALE:
        raise ValueError(
            f"INPUT.MIN_SCALE={cfg.INPUT.MIN_SCALE} and INPUT.MAX_SCALE={cfg.INPUT.MAX_SCALE} "
            "must satisfy 0 < MIN_SCALE <= MAX_SCALE"
        )
    return flip_augmentation(cfg) + [
        ResizeScale(cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE, size, size),
        T.FixedSizeCrop(crop_size=(size, size), pad_value=IMAGE_PAD_VALUE),
    ]


# --- reading -----------------------------------------------------------------------------
def read_image(dataset_dict: dict, image_format: str) -> np.ndarray:
    """(H, W, 3) uint8 image; checks it against the dict's height/width (sets them if absent).
    A missing, undecodable or wrongly sized file is a BrokenSampleError naming it."""
    with reading(dataset_dict["file_name"], "image"):
        image = utils.read_image(dataset_dict["file_name"], format=image_format)
        utils.check_image_size(dataset_dict, image)
    return image


def read_label_map(path: str) -> np.ndarray:
    """(H, W) float64 labels of a single-channel PNG/TIFF (uint8 or uint16); a missing or
    undecodable file, or one with several channels, is a BrokenSampleError naming it."""
    with reading(path, "label file"), Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise BrokenSampleError(f"label file '{path}' has shape {arr.shape}; expected one channel")
    return arr.astype(np.float64)


def segmentation_to_mask(segm: Any, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 mask of a COCO segmentation: polygons, RLE (compressed or not) or array."""
    from pycocotools import mask as mask_util

    if isinstance(segm, list):
        return utils.polygons_to_bitmask(segm, height, width).astype(np.uint8)
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):
            segm = mask_util.frPyObjects(segm, *segm["size"])
        mask = mask_util.decode(segm)
    elif isinstance(segm, np.ndarray):
        mask = segm
    else:
        raise ValueError(f"cannot read a segmentation of type {type(segm).__name__}")
    if mask.shape[:2] != (height, width):
        raise ValueError(f"segmentation of size {mask.shape[:2]} for an image of {(height, width)}")
    return mask.astype(np.uint8)


# --- transforming ----------------------------------------------------------------------------
def _flat(transforms: Any) -> list:
    if isinstance(transforms, TransformList):
        return [t for sub in transforms.transforms for t in _flat(sub)]
    if isinstance(transforms, (list, tuple)):
        return [t for sub in transforms for t in _flat(sub)]
    return [transforms]


def transform_label(transforms: Any, label: np.ndarray, pad_value: float) -> np.ndarray:
    """Applies `transforms` to a label map / mask with nearest interpolation, padding with
    `pad_value` (detectron2's PadTransform would use its own seg_pad_value)."""
    for t in _flat(transforms):
        if isinstance(t, PadTransform):
            pad = ((t.y0, t.y1), (t.x0, t.x1)) + ((0, 0),) * (label.ndim - 2)
            label = np.pad(label, pad, mode="constant", constant_values=pad_value)
        else:
            label = t.apply_segmentation(label)
    return np.ascontiguousarray(label)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) uint8 tensor."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def label_to_tensor(label: np.ndarray) -> torch.Tensor:
    """(H, W) label map (any dtype) -> (H, W) int64 tensor."""
    return torch.as_tensor(np.ascontiguousarray(label).astype(np.int64))


def pad_bottom_right(t: torch.Tensor, size_divisibility: int, value: float) -> torch.Tensor:
    """Pads the last two dims of `t` at the bottom/right up to multiples of
    `size_divisibility` (no-op when <= 0)."""
    if size_divisibility <= 0:
        return t
    h, w = t.shape[-2:]
    ph = (-h) % size_divisibility
    pw = (-w) % size_divisibility
    if ph == 0 and pw == 0:
        return t
    if t.dtype == torch.bool:
        return F.pad(t.to(torch.uint8), (0, pw, 0, ph), value=int(bool(value))).bool()
    return F.pad(t, (0, pw, 0, ph), value=value)


def make_instances(
    image_size: tuple[int, int],
    classes: Sequence[int],
    masks: Sequence[torch.Tensor] | torch.Tensor,
    with_boxes: bool = False,
) -> Instances:
    """Instances with gt_classes (N,) int64 and gt_masks (N, H, W) bool, dropping empty masks;
    gt_boxes (XYXY, mask extents) when `with_boxes`."""
    h, w = image_size
    if len(classes):
        stacked = torch.stack([torch.as_tensor(m, dtype=torch.bool) for m in masks])
        keep = stacked.flatten(1).any(dim=1)
        stacked = stacked[keep]
        cls = torch.as_tensor(list(classes), dtype=torch.int64)[keep]
    else:
        stacked = torch.zeros((0, h, w), dtype=torch.bool)
        cls = torch.zeros((0,), dtype=torch.int64)
    if stacked.shape[-2:] != (h, w):
        raise ValueError(f"masks of size {tuple(stacked.shape[-2:])} for an image of {(h, w)}")
    inst = Instances((h, w))
    inst.gt_classes = cls
    inst.gt_masks = stacked
    if with_boxes:
        inst.gt_boxes = (
            BitMasks(stacked).get_bounding_boxes() if len(cls) else Boxes(torch.zeros((0, 4)))
        )
    return inst


def panoptic_targets(
    pan_ids: np.ndarray, segments_info: Sequence[dict]
) -> tuple[list[int], list[torch.Tensor]]:
    """Classes and masks of the non-crowd segments of a panoptic id map."""
    ids = torch.as_tensor(pan_ids)
    classes, masks = [], []
    for seg in segments_info:
        if seg.get("iscrowd", 0):
            continue
        classes.append(int(seg["category_id"]))
        masks.append(ids == int(seg["id"]))
    return classes, masks


def read_panoptic_ids(path: str) -> np.ndarray:
    """(H, W) float64 segment ids of a COCO panoptic PNG (exact: ids < 2**24).

    Float64, like `read_label_map`, so that ids and semantic labels go through the same
    nearest-neighbour resize and stay aligned pixel for pixel."""
    with reading(path, "panoptic annotation PNG"), Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    return rgb2id(rgb).astype(np.float64)


def require_fields(mapper: object, dataset_dict: dict, fields: Sequence[str], kind: str) -> None:
    """A clear error when a dataset dict lacks what `mapper` reads (a dataset of another task)."""
    missing = [name for name in fields if name not in dataset_dict]
    if missing:
        raise ValueError(
            f"{type(mapper).__name__}: the dict of '{dataset_dict.get('file_name')}' has no "
            f"{'/'.join(repr(m) for m in missing)}; use {kind} dataset or another "
            "INPUT.DATASET_MAPPER_NAME"
        )


def augment_instance_annotations(
    dataset_dict: dict, image_format: str, augmentations: T.AugmentationList
) -> tuple[np.ndarray, list[torch.Tensor], list[int]]:
    """Reads the image of a COCO-format instance dict, pops its "annotations", and applies
    the augmentations to the image and to the masks of the non-crowd annotations.

    Returns the augmented image (H, W, 3), one (H, W) bool mask tensor and one category id
    per kept annotation (masks not yet padded)."""
    image = read_image(dataset_dict, image_format)
    h0, w0 = image.shape[:2]
    annos = [a for a in dataset_dict.pop("annotations") if not a.get("iscrowd", 0)]
    aug_input = T.AugInput(image)
    transforms = augmentations(aug_input)
    masks = [
        torch.as_tensor(
            np.array(
                transform_label(transforms, segmentation_to_mask(a["segmentation"], h0, w0), 0),
                dtype=bool,
            )
        )
        for a in annos
    ]
    return aug_input.image, masks, [int(a["category_id"]) for a in annos]


def pop_panoptic_inputs(
    mapper: AugmentingMapper, dataset_dict: dict
) -> tuple[np.ndarray, np.ndarray, list, str | None]:
    """Checks that `dataset_dict` is panoptic (`require_fields`), reads its image (in
    `mapper.image_format`) and panoptic id map, and pops the panoptic fields. Returns (image,
    segment ids (H, W) float64, segments_info, sem_seg_file_name or None)."""
    require_fields(mapper, dataset_dict, ["pan_seg_file_name", "segments_info"], "a panoptic")
    image = read_image(dataset_dict, mapper.image_format)
    pan_ids = read_panoptic_ids(dataset_dict.pop("pan_seg_file_name"))
    return (
        image,
        pan_ids,
        dataset_dict.pop("segments_info"),
        dataset_dict.pop("sem_seg_file_name", None),
    )
