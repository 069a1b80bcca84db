"""COCO 2017: panoptic with semantic labels (Mask2Former's names) and detectron2's instances.

Registered names (root `$DETECTRON2_DATASETS`, layout in datasets/README.md, "COCO"):

- `coco_2017_{train,val}_panoptic_with_sem_seg` and the alias `coco_2017_{train,val}_panoptic`
  (replacing detectron2's standard registration of that name, as Mask2Former does): panoptic
  PNGs + `segments_info` + the semantic PNGs of `panoptic_semseg_{train,val}2017`; the 133
  classes of detectron2's `COCO_CATEGORIES` (80 things first, then 53 stuff).
- `coco_2017_{train,val}` (instances): detectron2's builtin registration, unchanged except that
  loading a missing dataset raises our error.
"""

from __future__ import annotations

import os

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from .catalog import guard_registered
from .metadata import panoptic_metadata
from .panoptic_loader import register_coco_panoptic_annos_sem_seg

FAMILY = "COCO"

# prefix -> (image folder, instances json, panoptic PNG folder, panoptic json, semantic folder)
_COCO_PANOPTIC_SPLITS = {
    "coco_2017_train_panoptic": (
        "coco/train2017",
        "coco/annotations/instances_train2017.json",
        "coco/panoptic_train2017",
        "coco/annotations/panoptic_train2017.json",
        "coco/panoptic_semseg_train2017",
    ),
    "coco_2017_val_panoptic": (
        "coco/val2017",
        "coco/annotations/instances_val2017.json",
        "coco/panoptic_val2017",
        "coco/annotations/panoptic_val2017.json",
        "coco/panoptic_semseg_val2017",
    ),
}

# detectron2's builtin instance sets: name -> (image folder, json)
_COCO_INSTANCE_SPLITS = {
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
}


def coco_panoptic_metadata() -> dict:
    """Metadata of COCO panoptic (133 classes): see `panoptic_metadata`."""
    return panoptic_metadata(COCO_CATEGORIES)


def register_all_coco(root: str) -> None:
    meta = coco_panoptic_metadata()
    for prefix, (image, instances, pan, pan_json, semseg) in _COCO_PANOPTIC_SPLITS.items():
        register_coco_panoptic_annos_sem_seg(
            prefix,
            meta,
            os.path.join(root, image),
            os.path.join(root, pan),
            os.path.join(root, pan_json),
            os.path.join(root, semseg),
            os.path.join(root, instances),
            family=FAMILY,
        )
    for name, (image, json_file) in _COCO_INSTANCE_SPLITS.items():
        guard_registered(
            name,
            FAMILY,
            [
                (os.path.join(root, json_file), "instances json"),
                (os.path.join(root, image), "image folder"),
            ],
        )
