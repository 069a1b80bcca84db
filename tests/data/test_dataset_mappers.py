"""Dataset mappers: output contract, padding, classes, eval mode and the selector."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from PIL import Image

from dinat_m2f.config import add_maskformer2_config
from dinat_m2f.data import DATASET_MAPPERS, build_dataset_mapper
from dinat_m2f.panoptic_ids import rgb2id

from .conftest import PREFIX, SMALL

MAPPER_DATASET = {
    "mask_former_semantic": "sem_seg",
    "mask_former_panoptic": "panoptic_with_sem_seg",
    "mask_former_instance": "instance",
    "coco_instance_lsj": "instance",
    "coco_panoptic_lsj": "panoptic",
}
NUM_CLASSES, NUM_THINGS = 8, 4


def make_cfg(mapper: str, **overrides):
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = mapper
    cfg.INPUT.FORMAT = "RGB"
    cfg.DATASETS.TRAIN = (f"{PREFIX}_train_{MAPPER_DATASET[mapper]}",)
    cfg.DATASETS.TEST = (f"{PREFIX}_val_{MAPPER_DATASET[mapper]}",)
    cfg.INPUT.MIN_SIZE_TRAIN = (80, 96, 120)
    cfg.INPUT.MAX_SIZE_TRAIN = 300
    cfg.INPUT.MIN_SIZE_TEST = 100
    cfg.INPUT.MAX_SIZE_TEST = 300
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (70, 90)  # not a multiple of 32: padding happens
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.8
    cfg.INPUT.COLOR_AUG_SSD = True
    cfg.INPUT.SIZE_DIVISIBILITY = 32
    cfg.INPUT.IMAGE_SIZE = 112
    cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE = 0.5, 1.5
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = getattr(node, p)
        setattr(node, last, value)
    return cfg


def check_output(out, mapper, is_train):
    image, inst = out["image"], out["instances"]
    assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
    h, w = image.shape[1:]
    assert inst.image_size == (h, w)
    assert inst.gt_masks.dtype == torch.bool and inst.gt_masks.shape == (len(inst), h, w)
    assert inst.gt_classes.dtype == torch.int64
    assert inst.gt_masks.flatten(1).any(1).all(), "empty masks must be dropped"
    limit = NUM_THINGS if "instance" in mapper else NUM_CLASSES
    assert ((inst.gt_classes >= 0) & (inst.gt_classes < limit)).all()
    assert out["height"] == out["width"] == SMALL["size"]
    if "lsj" in mapper:
        assert inst.has("gt_boxes") and inst.gt_boxes.tensor.shape == (len(inst), 4)
        if is_train:
            assert (h, w) == (112, 112)
        for box, mask in zip(inst.gt_boxes.tensor, inst.gt_masks):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    elif is_train:
        assert h % 32 == 0 and w % 32 == 0
    else:
        assert min(h, w) == 100  # test resize, no padding
    if mapper in ("mask_former_semantic", "mask_former_panoptic", "coco_panoptic_lsj"):
        sem = out["sem_seg"]
        assert sem.dtype == torch.int64 and sem.shape == (h, w)
        valid = sem[sem != 255]
        assert ((valid >= 0) & (valid < NUM_CLASSES)).all()
    if mapper == "mask_former_semantic":
        assert sorted(inst.gt_classes.tolist()) == sorted(set(sem.unique().tolist()) - {255})
        for c, m in zip(inst.gt_classes, inst.gt_masks):
            assert torch.equal(m, sem == c)
    if mapper == "mask_former_panoptic":
        # every mask pixel carries its class in sem_seg
        for c, m in zip(inst.gt_classes, inst.gt_masks):
            assert (sem[m] == c).all()
    return h, w


@pytest.mark.parametrize("mapper", sorted(MAPPER_DATASET))
@pytest.mark.parametrize("is_train", [True, False])
def test_mapper_contract(shapes, mapper, is_train):
    np.random.seed(0)
    cfg = make_cfg(mapper)
    m = build_dataset_mapper(cfg, is_train)
    assert isinstance(m, DATASET_MAPPERS[mapper])
    name = (cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST)[0]
    dicts = DatasetCatalog.get(name)
    for d in dicts[:3]:
        out = m(d)
        check_output(out, mapper, is_train)
        assert "annotations" not in out and "pan_seg_file_name" not in out


@pytest.mark.parametrize(
    "mapper", ["mask_former_semantic", "mask_former_panoptic", "mask_former_instance"]
)
def test_padding_is_consistent(shapes, mapper):
    # no crop/resize/flip: the original 96 px grows to 128 by padding only
    cfg = make_cfg(
        mapper,
        **{
            "INPUT.CROP.ENABLED": False,
            "INPUT.MIN_SIZE_TRAIN": (96,),
            "INPUT.RANDOM_FLIP": "none",
            "INPUT.COLOR_AUG_SSD": False,
            "INPUT.SIZE_DIVISIBILITY": 64,
        },
    )
    m = build_dataset_mapper(cfg, True)
    d = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[0]
    out = m(d)
    assert out["image"].shape == (3, 128, 128)
    assert (out["image"][:, 96:, :] == 128).all() and (out["image"][:, :, 96:] == 128).all()
    with Image.open(d["file_name"]) as im:
        original = torch.as_tensor(np.array(im)).permute(2, 0, 1)
    assert torch.equal(out["image"][:, :96, :96], original)
    masks = out["instances"].gt_masks
    assert not masks[:, 96:, :].any() and not masks[:, :, 96:].any()
    if "sem_seg" in out:
        assert (out["sem_seg"][96:, :] == 255).all() and (out["sem_seg"][:, 96:] == 255).all()
    if mapper == "mask_former_panoptic":  # masks are exactly the PNG's non-crowd segments
        with Image.open(d["pan_seg_file_name"]) as im:
            ids = torch.as_tensor(rgb2id(np.asarray(im)))
        expected = [ids == s["id"] for s in d["segments_info"]]
        assert len(expected) == len(masks)
        for e, got in zip(expected, masks):
            assert torch.equal(got[:96, :96], e)
        classes = [s["category_id"] for s in d["segments_info"]]
        assert out["instances"].gt_classes.tolist() == classes


def test_lsj_pads_with_void(shapes):
    cfg = make_cfg("coco_panoptic_lsj", **{"INPUT.MIN_SCALE": 0.5, "INPUT.MAX_SCALE": 0.5})
    out = build_dataset_mapper(cfg, True)(DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[0])
    # 96 px scaled by 0.5 * 112 / 96 -> 56 px, padded to 112
    assert out["image"].shape == (3, 112, 112)
    assert (out["image"][:, 56:, :] == 128).all()
    assert not out["instances"].gt_masks[:, 56:, :].any()
    assert (out["sem_seg"][56:, :] == 255).all()


def test_crowd_segments_are_skipped(shapes):
    cfg = make_cfg(
        "mask_former_panoptic", **{"INPUT.CROP.ENABLED": False, "INPUT.RANDOM_FLIP": "none"}
    )
    m = build_dataset_mapper(cfg, True)
    d = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[0]
    n = len(m(d)["instances"])
    d["segments_info"][0]["iscrowd"] = 1
    assert len(m(d)["instances"]) == n - 1
    cfg = make_cfg("coco_instance_lsj")
    m = build_dataset_mapper(cfg, True)
    d = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[0]
    for a in d["annotations"]:
        a["iscrowd"] = 1
    assert len(m(d)["instances"]) == 0 and m(d)["instances"].gt_masks.shape[0] == 0


def test_wrong_dataset_for_mapper_is_refused(shapes):
    cfg = make_cfg("mask_former_semantic")
    d = DatasetCatalog.get(f"{PREFIX}_train_instance")[0]
    with pytest.raises(ValueError, match="sem_seg_file_name"):
        build_dataset_mapper(cfg, True)(d)


def test_selector_rejects_unknown_name():
    cfg = make_cfg("mask_former_semantic")
    cfg.INPUT.DATASET_MAPPER_NAME = "detr_panoptic"
    with pytest.raises(ValueError) as e:
        build_dataset_mapper(cfg, True)
    msg = str(e.value)
    assert "detr_panoptic" in msg and "INPUT.DATASET_MAPPER_NAME" in msg
    assert all(name in msg for name in DATASET_MAPPERS)


def test_color_aug_changes_only_the_image():
    from dinat_m2f.data.augmentations import ColorAugSSDTransform

    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    t = ColorAugSSDTransform("RGB", 20.0, 1.2, 0.8, 10, contrast_first=False)
    out = t.apply_image(img)
    assert out.dtype == np.uint8 and out.shape == img.shape and not np.array_equal(out, img)
    seg = np.arange(16 * 16).reshape(16, 16)
    assert t.apply_segmentation(seg) is seg
    assert np.array_equal(ColorAugSSDTransform("BGR").apply_image(img), img)
    with pytest.raises(ValueError, match="img_format"):
        ColorAugSSDTransform("YUV")
