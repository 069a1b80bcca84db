"""Any image size, from 1x1 up, through every backbone and every model family: a property-based
test draws image sizes (tiny, odd, extreme aspect such as 16x2048, not multiples of the size
divisibility), writes a synthetic dataset record of that size (image, semantic PNG, panoptic
PNG and COCO annotations), runs the family's dataset mapper on it with drawn resize / crop
settings, then

- inference (test mapper, eval mode): outputs at the record's height and width;
- one training step (train mapper, train mode): every loss finite, gradients finite and
  reaching the backbone's first layer.

Backbones (tiny widths and depths, CPU): DiNAT (dilations larger than the small maps allow),
NAT, DiNAT_s, Mask2Former's Swin, torchvision's Swin; for the R-CNN detectors the FPN
backbones the project registers (DiNAT, NAT, DiNAT_s). Families: Mask2Former semantic,
panoptic and instance (Mask2Former's mappers and the large-scale-jitter ones), Mask R-CNN and
Cascade Mask R-CNN.
"""

from __future__ import annotations

import functools
import itertools
import os
import tempfile

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_util

import dinat_m2f.modeling  # noqa: F401  (registers the backbones and models)
from dinat_m2f.config import add_tvswin_config
from dinat_m2f.data import build_dataset_mapper
from dinat_m2f.engine.setup import load_cfg
from dinat_m2f.modeling.backbone import torchvision_swin
from dinat_m2f.panoptic_ids import id2rgb
from tests.conftest import tiny_dinat_opts

from .mask2former_tiny import METADATA_NAME, NUM_CLASSES, tiny_mask2former_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DETECTION = os.path.join(REPO, "configs", "coco", "detection", "dinat")
IGNORE = 255
STUFF, THINGS = 2, (0, 1)  # contiguous classes of the tiny Mask2Former metadata

# --- sizes ------------------------------------------------------------------------------------

SIDE = st.one_of(st.integers(1, 40), st.integers(41, 160))
# one side tiny or short, the other long (16 x 2048 and the like): at most 48k pixels
EXTREME = st.tuples(st.integers(1, 24), st.integers(600, 2048))
SIZES = st.one_of(
    st.tuples(SIDE, SIDE),
    EXTREME,
    EXTREME.map(lambda hw: hw[::-1]),
    st.sampled_from([(1, 1), (1, 2), (2, 1), (16, 2048), (2048, 16), (33, 65), (31, 1)]),
)


# --- synthetic records ------------------------------------------------------------------------


def write_record(folder: str, name: str, size: tuple[int, int], seed: int) -> dict:
    """A record of one image of `size` = (height, width) in every format the mappers read:
    stuff (class 2) everywhere but two thing rectangles (classes 0, 1; 1 pixel wide or more,
    possibly overlapping the border) and a void corner; the files are written to `folder`.

    Returns the union of a semantic, a panoptic and a COCO instance dataset dict."""
    rng = np.random.default_rng(seed)
    height, width = size
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    semantic = np.full((height, width), STUFF, dtype=np.uint8)
    segment_ids = np.ones((height, width), dtype=np.uint32)  # segment 1: the stuff
    segments = [{"id": 1, "category_id": STUFF, "iscrowd": 0, "isthing": False}]
    annotations = []
    for index, category in enumerate(THINGS):
        y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        y1 = min(height, y0 + int(rng.integers(1, max(2, height // 2 + 1))))
        x1 = min(width, x0 + int(rng.integers(1, max(2, width // 2 + 1))))
        semantic[y0:y1, x0:x1] = category
        segment_ids[y0:y1, x0:x1] = 2 + index
        segments.append({"id": 2 + index, "category_id": category, "iscrowd": 0, "isthing": True})
        annotations.append(
            {
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": category,
                "iscrowd": 0,
                # the rectangle's outline (what COCO's polygons look like)
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
            }
        )
    void = rng.integers(0, 3)  # a void corner of 0..2 pixels
    semantic[:void, :void] = IGNORE
    segment_ids[:void, :void] = 0
    paths = {
        kind: os.path.join(folder, f"{name}_{kind}.png")
        for kind in ("image", "semantic", "panoptic")
    }
    Image.fromarray(image).save(paths["image"])
    Image.fromarray(semantic).save(paths["semantic"])
    Image.fromarray(id2rgb(segment_ids)).save(paths["panoptic"])
    present = set(np.unique(segment_ids).tolist())
    return {
        "file_name": paths["image"],
        "image_id": name,
        "height": height,
        "width": width,
        "sem_seg_file_name": paths["semantic"],
        "pan_seg_file_name": paths["panoptic"],
        "segments_info": [s for s in segments if s["id"] in present],
        "annotations": annotations,
    }


def rle_annotations(record: dict) -> dict:
    """The record with its polygons as RLE (the Mask2Former instance mappers' input)."""
    record = dict(record)
    height, width = record["height"], record["width"]
    record["annotations"] = [
        {
            **a,
            "segmentation": mask_util.merge(
                mask_util.frPyObjects(a["segmentation"], height, width)
            ),
        }
        for a in record["annotations"]
    ]
    return record


# --- models -----------------------------------------------------------------------------------

M2F_BACKBONES = ("dinat", "nat", "dinat_s", "swin", "tvswin")
RCNN_BACKBONES = ("dinat", "nat", "dinat_s")
# a torchvision Swin small enough for the CPU (the wrapper builds torchvision's network from it)
TINY_TVSWIN = (
    "_tiny_test",
    torchvision_swin.SwinVariant(32, (1, 1, 2, 1), (1, 2, 4, 8), window_size=7, v2=False),
)


def _tiny_backbone(cfg, backbone: str) -> None:
    """Tiny widths and depths for `backbone`; DiNAT's dilations exceed what small maps allow."""
    dilations = "None" if backbone == "nat" else "[[4], [3], [2], [2]]"
    cfg.merge_from_list(tiny_dinat_opts(dilations) + ["MODEL.DINAT.DROP_PATH_RATE", "0.0"])


@functools.cache
def m2f_model(family: str, backbone: str):
    """(cfg, model) of a tiny Mask2Former for `family` ("semantic", "panoptic", "instance")."""
    cfg = tiny_mask2former_cfg()
    add_tvswin_config(cfg)
    _tiny_backbone(cfg, backbone)
    cfg.MODEL.BACKBONE.NAME = {
        "dinat": "D2DiNAT",
        "nat": "D2DiNAT",
        "dinat_s": "D2DiNATs",
        "swin": "D2SwinTransformer",
        "tvswin": "D2TorchvisionSwin",
    }[backbone]
    swin = cfg.MODEL.SWIN
    swin.EMBED_DIM, swin.DEPTHS, swin.NUM_HEADS = 32, [1, 1, 2, 1], [1, 2, 4, 8]
    swin.DROP_PATH_RATE = 0.0
    cfg.MODEL.TVSWIN.VARIANT, cfg.MODEL.TVSWIN.DROP_PATH_RATE = TINY_TVSWIN[0], 0.0
    # 2 channels per group of the pixel decoder's GroupNorm(32): a 1x1 map has 2 values
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 64
    test = cfg.MODEL.MASK_FORMER.TEST
    test.SEMANTIC_ON = family == "semantic"
    test.PANOPTIC_ON = family == "panoptic"
    test.INSTANCE_ON = family == "instance"
    cfg.INPUT.FORMAT = "RGB"
    torch.manual_seed(0)
    saved = dict(torchvision_swin.SWIN_VARIANTS)
    torchvision_swin.SWIN_VARIANTS[TINY_TVSWIN[0]] = TINY_TVSWIN[1]
    try:
        model = build_model(cfg)
    finally:
        torchvision_swin.SWIN_VARIANTS.clear()
        torchvision_swin.SWIN_VARIANTS.update(saved)
    return cfg, model


@functools.cache
def rcnn_model(family: str, backbone: str):
    """(cfg, model) of a tiny Mask R-CNN ("mask_rcnn") or Cascade Mask R-CNN ("cascade")."""
    name = "mask_rcnn" if family == "mask_rcnn" else "cascade_mask_rcnn"
    builder = {
        "dinat": "build_dinat_fpn_backbone",
        "nat": "build_nat_fpn_backbone",
        "dinat_s": "build_dinat_s_fpn_backbone",
    }[backbone]
    cfg = load_cfg(
        os.path.join(DETECTION, f"{name}_dinat_mini_3x.yaml"),
        ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", "MODEL.WEIGHTS", ""]
        + ["MODEL.BACKBONE.NAME", builder, "MODEL.FPN.OUT_CHANNELS", "32"]
        + ["MODEL.ROI_BOX_HEAD.CONV_DIM", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64"]
        + ["MODEL.ROI_MASK_HEAD.CONV_DIM", "32", "MODEL.ROI_HEADS.NUM_CLASSES", "2"]
        + ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "32"]
        + ["MODEL.RPN.POST_NMS_TOPK_TRAIN", "50", "MODEL.RPN.POST_NMS_TOPK_TEST", "20"]
        + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "5"]
        + ["INPUT.FORMAT", "RGB", "DATASETS.TRAIN", f"('{METADATA_NAME}',)"]
        + ["DATASETS.TEST", f"('{METADATA_NAME}',)"],
    )
    cfg.defrost()
    _tiny_backbone(cfg, backbone)
    torch.manual_seed(0)
    return cfg, build_model(cfg)


# --- mapper settings --------------------------------------------------------------------------


@st.composite
def mapper_settings(draw, family: str) -> dict:
    """Config overrides of the data path: test resize, training resize and crop, padding."""
    short = st.one_of(st.just(0), st.integers(8, 72))  # 0: no resize
    settings_ = {
        "INPUT.MIN_SIZE_TEST": draw(short, label="MIN_SIZE_TEST"),
        "INPUT.MAX_SIZE_TEST": draw(st.sampled_from([96, 160, 4000]), label="MAX_SIZE_TEST"),
        "INPUT.MIN_SIZE_TRAIN": (draw(short, label="MIN_SIZE_TRAIN"),),
        "INPUT.MAX_SIZE_TRAIN": draw(st.sampled_from([96, 160, 4000]), label="MAX_SIZE_TRAIN"),
        "INPUT.RANDOM_FLIP": draw(st.sampled_from(["horizontal", "vertical", "none"])),
    }
    crop = draw(st.booleans(), label="crop")
    crop_size = (draw(st.integers(1, 80), label="crop h"), draw(st.integers(1, 80), label="crop w"))
    if family in ("mask_rcnn", "cascade"):
        settings_["INPUT.DETR_CROP.ENABLED"] = crop
        settings_["INPUT.DETR_CROP.PROB"] = 1.0
        settings_["INPUT.DETR_CROP.MIN_SIZE"] = (draw(st.integers(1, 96), label="detr min"),)
        settings_["INPUT.DETR_CROP.SIZE"] = sorted(crop_size)
        settings_["INPUT.MASK_FORMAT"] = draw(st.sampled_from(["polygon", "bitmask"]))
        return settings_
    lsj = family != "semantic" and draw(st.booleans(), label="large-scale jitter")
    settings_["INPUT.DATASET_MAPPER_NAME"] = {
        "semantic": "mask_former_semantic",
        "panoptic": "coco_panoptic_lsj" if lsj else "mask_former_panoptic",
        "instance": "coco_instance_lsj" if lsj else "mask_former_instance",
    }[family]
    settings_["INPUT.CROP.ENABLED"] = crop
    settings_["INPUT.CROP.TYPE"] = "absolute"
    settings_["INPUT.CROP.SIZE"] = crop_size
    settings_["INPUT.COLOR_AUG_SSD"] = draw(st.booleans(), label="color aug")
    settings_["INPUT.SIZE_DIVISIBILITY"] = draw(st.sampled_from([-1, 32]), label="pad train")
    settings_["INPUT.IMAGE_SIZE"] = draw(st.integers(8, 96), label="LSJ size")
    settings_["INPUT.MIN_SCALE"] = draw(st.sampled_from([0.1, 0.5, 1.0]), label="LSJ min scale")
    settings_["INPUT.MAX_SCALE"] = draw(st.sampled_from([1.0, 2.0]), label="LSJ max scale")
    # 0 pads nothing (Mask2Former's semantic configs), -1 the backbone's 32
    settings_["MODEL.MASK_FORMER.SIZE_DIVISIBILITY"] = draw(st.sampled_from([0, -1, 32]))
    return settings_


def configured(cfg, overrides: dict):
    cfg = cfg.clone()
    cfg.defrost()
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = getattr(node, part)
        setattr(node, last, value)
    return cfg


# --- the property -----------------------------------------------------------------------------

_folder = tempfile.TemporaryDirectory(prefix="any_image_size_")
_names = itertools.count()


def check_any_size(family: str, backbone: str, sizes: list, overrides: dict, seed: int):
    cfg, model = (rcnn_model if family in ("mask_rcnn", "cascade") else m2f_model)(family, backbone)
    cfg = configured(cfg, overrides)
    records = [
        write_record(_folder.name, f"r{next(_names)}", size, seed + i)
        for i, size in enumerate(sizes)
    ]
    if family == "instance":
        records = [rle_annotations(r) for r in records]
    np.random.seed(seed)  # the mappers' augmentations draw from numpy's global stream
    torch.manual_seed(seed)

    # inference: outputs at the record's size
    test_mapper = build_dataset_mapper(cfg, is_train=False)
    model.eval()
    with torch.no_grad():
        outputs = model([test_mapper(dict(r)) for r in records])
    for record, output in zip(records, outputs):
        size = (record["height"], record["width"])
        if family == "semantic":
            assert output["sem_seg"].shape == (NUM_CLASSES, *size)
            assert torch.isfinite(output["sem_seg"]).all()
        if family == "panoptic":
            assert output["panoptic_seg"][0].shape == size
        if family in ("instance", "mask_rcnn", "cascade"):
            instances = output["instances"]
            assert instances.image_size == size
            masks = instances.pred_masks
            assert masks.shape[-2:] == size and len(masks) == len(instances)
            assert torch.isfinite(instances.scores).all()

    # one training step: finite losses, finite gradients that reach the first layer
    train_mapper = build_dataset_mapper(cfg, is_train=True)
    batch = [train_mapper(dict(r)) for r in records]
    model.train()
    model.zero_grad(set_to_none=True)
    with EventStorage():
        losses = model(batch)
    bad = {k: float(v) for k, v in losses.items() if not torch.isfinite(v).all()}
    assert not bad, f"non-finite losses {bad} for images {sizes}"
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values()), (
        f"non-finite gradients for images {sizes}: "
        f"{[n for n, g in grads.items() if not torch.isfinite(g).all()]}"
    )
    first = next(n for n, p in model.named_parameters() if "backbone" in n and p.requires_grad)
    assert first in grads, f"no gradient reached {first}"
    model.zero_grad(set_to_none=True)


# Few examples per family keep CI fast (derandomized: the same ones every run); no shrinking:
# an example takes seconds, and the failing draws are printed as they are.
BOUNDED = settings(
    max_examples=6,
    deadline=None,
    database=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("family", ["semantic", "panoptic", "instance"])
@BOUNDED
@given(data=st.data())
def test_mask2former_any_image_size(family, data):
    backbone = data.draw(st.sampled_from(M2F_BACKBONES), label="backbone")
    sizes = data.draw(st.lists(SIZES, min_size=1, max_size=2), label="sizes")
    overrides = data.draw(mapper_settings(family), label="settings")
    check_any_size(family, backbone, sizes, overrides, data.draw(st.integers(0, 2**16)))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("family", ["mask_rcnn", "cascade"])
@BOUNDED
@given(data=st.data())
def test_rcnn_any_image_size(family, data):
    backbone = data.draw(st.sampled_from(RCNN_BACKBONES), label="backbone")
    sizes = data.draw(st.lists(SIZES, min_size=1, max_size=2), label="sizes")
    overrides = data.draw(mapper_settings(family), label="settings")
    check_any_size(family, backbone, sizes, overrides, data.draw(st.integers(0, 2**16)))


# Every family on a 1x1 and a 16x2048 image as they are (no resize, no crop), each with
# another backbone
NAMED = [
    ("semantic", "dinat"),
    ("panoptic", "dinat_s"),
    ("instance", "tvswin"),
    ("semantic", "swin"),
    ("mask_rcnn", "nat"),
    ("cascade", "dinat"),
]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("family,backbone", NAMED)
def test_1x1_and_16x2048_as_they_are(family, backbone):
    overrides = {"INPUT.MIN_SIZE_TEST": 0, "INPUT.MIN_SIZE_TRAIN": (0,)}
    if family not in ("mask_rcnn", "cascade"):
        overrides["INPUT.DATASET_MAPPER_NAME"] = f"mask_former_{family}"
        overrides["INPUT.CROP.ENABLED"] = False
        overrides["MODEL.MASK_FORMER.SIZE_DIVISIBILITY"] = 0
    check_any_size(family, backbone, [(1, 1), (16, 2048)], overrides, seed=0)
