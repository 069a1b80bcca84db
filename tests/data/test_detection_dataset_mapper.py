"""The R-CNN detectors' mapper ("detectron2_instance"): detectron2's DatasetMapper with the
DiNAT detection release's multi-scale training (resize, or resize + crop + resize, then flip),
on the built-in instance annotations (RLE masks, INPUT.MASK_FORMAT bitmask)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T

from dinat_m2f.data import DATASET_MAPPERS, build_dataset_mapper
from dinat_m2f.data.augmentations import ResizeShortestEdge
from dinat_m2f.data.dataset_mappers.detection_dataset_mapper import (
    DetectionDatasetMapper,
    build_detection_augmentation,
)
from dinat_m2f.engine.setup import load_cfg

from .conftest import PREFIX

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
COCO = CONFIGS / "coco" / "detection" / "dinat" / "mask_rcnn_dinat_mini_3x.yaml"
BUILTIN = CONFIGS / "builtin" / "mask_rcnn_dinat_mini_builtin_shapes.yaml"


def coco_cfg(*opts):
    return load_cfg(str(COCO), ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", *opts])


def test_release_augmentation_list():
    augs = build_detection_augmentation(coco_cfg(), is_train=True)
    # the release's list; the resize is our subclass, which never rounds a side to 0 pixels
    assert [type(a) for a in augs] == [T.RandomApply, ResizeShortestEdge, type(augs[2])]
    assert isinstance(augs[1], T.ResizeShortestEdge) and isinstance(augs[2], T.RandomFlip)
    crop_branch = augs[0]
    assert crop_branch.prob == 0.5
    resize, crop = crop_branch.aug.augs
    assert isinstance(resize, T.ResizeShortestEdge) and isinstance(crop, T.RandomCrop)
    assert tuple(resize.short_edge_length) == (400, 500, 600) and resize.max_size == 1333
    assert (crop.crop_type, tuple(crop.crop_size)) == ("absolute_range", (384, 600))
    assert tuple(augs[1].short_edge_length) == tuple(range(480, 801, 32))
    assert augs[1].max_size == 1333 and augs[1].is_range is False
    test_augs = build_detection_augmentation(coco_cfg(), is_train=False)
    assert len(test_augs) == 1 and test_augs[0].short_edge_length == (800, 800)


def test_both_crops_is_an_error():
    with pytest.raises(ValueError, match="INPUT.DETR_CROP.ENABLED and INPUT.CROP.ENABLED"):
        build_detection_augmentation(coco_cfg("INPUT.CROP.ENABLED", "True"), is_train=True)


def test_registered_under_its_name():
    assert DATASET_MAPPERS["detectron2_instance"] is DetectionDatasetMapper


@pytest.mark.parametrize("crop_prob", [0.0, 1.0])
def test_maps_builtin_instances_with_the_crop_branch(shapes, crop_prob):
    """A 96 px image: resized to 480..800, with the crop branch first when it is drawn; masks
    (RLE -> bitmask) follow, boxes are recomputed from the cropped masks."""
    cfg = load_cfg(
        str(BUILTIN),
        [
            "INPUT.DETR_CROP.ENABLED",
            "True",
            "INPUT.DETR_CROP.PROB",
            str(crop_prob),
            "INPUT.MIN_SIZE_TRAIN",
            "(480, 512)",
            "INPUT.MAX_SIZE_TRAIN",
            "1333",
        ],
    )
    mapper = build_dataset_mapper(cfg, is_train=True)
    assert isinstance(mapper, DetectionDatasetMapper) and mapper.recompute_boxes
    dataset = DatasetCatalog.get(f"{PREFIX}_train_instance")
    torch.manual_seed(0)
    for record in dataset[:4]:
        out = mapper(dict(record))
        image, instances = out["image"], out["instances"]
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert min(image.shape[1:]) in (480, 512)  # square inputs stay square
        assert instances.image_size == tuple(image.shape[1:])
        assert instances.gt_masks.tensor.shape[1:] == image.shape[1:]
        assert set(instances.gt_classes.tolist()) <= {0, 1, 2, 3}
        if crop_prob == 0.0:  # uncropped: every shape is kept
            assert len(instances) == len(record["annotations"])
        for box, mask in zip(instances.gt_boxes.tensor, instances.gt_masks.tensor):
            _, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs):
                assert box[0] == xs.min() and box[2] == xs.max() + 1


def test_eval_mode_keeps_the_record_size(shapes):
    cfg = load_cfg(str(BUILTIN))
    mapper = build_dataset_mapper(cfg, is_train=False)
    record = DatasetCatalog.get(f"{PREFIX}_val_instance")[0]
    out = mapper(dict(record))
    assert tuple(out["image"].shape[1:]) == (160, 160)  # 96 px resized to MIN_SIZE_TEST
    assert (out["height"], out["width"]) == (record["height"], record["width"])
