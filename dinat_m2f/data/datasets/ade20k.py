"""ADE20K (SceneParse150): semantic, panoptic and instance registrations.

Registered names (root `$DETECTRON2_DATASETS`, layout in datasets/README.md, "ADE20K"):

- `ade20k_sem_seg_{train,val}`: detectron2's builtin registration (150 classes, labels from
  `annotations_detectron2/`), unchanged except that loading a missing dataset raises our error.
- `ade20k_panoptic_{train,val}`: COCO-format panoptic made by datasets/prepare_ade20k_pan_seg.py
  (category ids 0..149 = SceneParse150 label - 1; 100 things, 50 stuff), with the semantic
  labels of `annotations_detectron2/` as sem_seg_file_name.
- `ade20k_instance_{train,val}`: COCO-format instances of the 100 thing classes made by
  datasets/prepare_ade20k_ins_seg.py (category ids as above; contiguous ids 0..99).

Facts of the official data: SceneParse150 label PNGs hold 1..150 (0 = unlabeled). The
instance PNGs of the 2017 instance challenge (`annotations_instance/`) hold the instance
class (1..100) in R and an instance number (0 = none) in G. `ADE20K_INSTANCE_TO_SEMANTIC`
is the official mapping of the 100 instance classes to SceneParse150 labels
(`ade20k_instance_catid_mapping.txt` of the ADE20K repository).
"""

from __future__ import annotations

import os

from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES

from .catalog import guard_registered
from .instances_loader import register_instances_json
from .metadata import distinct_colors, panoptic_metadata
from .panoptic_loader import register_panoptic

FAMILY = "ADE20K"

# SceneParse150 label (1..150) of instance classes 1..100, in instance-class order.
ADE20K_INSTANCE_TO_SEMANTIC: tuple[int, ...] = (
    8, 9, 11, 13, 15, 16, 19, 20, 21, 23, 24, 25, 28, 31, 32, 33, 34, 36, 37, 38,
    39, 40, 42, 43, 44, 45, 46, 48, 50, 51, 54, 56, 57, 58, 59, 63, 65, 66, 67, 68,
    70, 71, 72, 73, 74, 75, 76, 77, 79, 81, 82, 83, 84, 86, 87, 88, 89, 90, 91, 93,
    94, 96, 98, 99, 103, 104, 105, 108, 109, 111, 112, 113, 116, 117, 119, 120, 121, 122, 124,
    125, 126, 127, 128, 130, 131, 133, 134, 135, 136, 137, 138, 139, 140, 143, 144, 145,
    147, 148, 149, 150,
)  # fmt: skip
assert len(ADE20K_INSTANCE_TO_SEMANTIC) == 100

_THING_IDS = {label - 1 for label in ADE20K_INSTANCE_TO_SEMANTIC}

# Panoptic / instance category list: id = SceneParse150 label - 1 (0..149), as Mask2Former.
ADE20K_150_CATEGORIES: list[dict] = [
    {"id": i, "name": name, "isthing": int(i in _THING_IDS), "color": color}
    for i, (name, color) in enumerate(zip(ADE20K_SEM_SEG_CATEGORIES, distinct_colors(150)))
]


def ade20k_panoptic_metadata() -> dict:
    """Metadata of ADE20K panoptic (150 classes, contiguous id = category id)."""
    return panoptic_metadata(ADE20K_150_CATEGORIES)


def ade20k_instance_metadata() -> dict:
    """Metadata of ADE20K instances: the 100 thing classes, contiguous ids 0..99."""
    things = [c for c in ADE20K_150_CATEGORIES if c["isthing"]]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [c["color"] for c in things],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
    }


def register_all_ade20k(root: str) -> None:
    ade = os.path.join(root, "ADEChallengeData2016")
    for split, dirname in (("train", "training"), ("val", "validation")):
        image_dir = os.path.join(ade, "images", dirname)
        semseg_dir = os.path.join(ade, "annotations_detectron2", dirname)
        instance_json = os.path.join(ade, f"ade20k_instance_{split}.json")
        guard_registered(
            f"ade20k_sem_seg_{split}",
            FAMILY,
            [(image_dir, "image folder"), (semseg_dir, "label folder")],
        )
        register_panoptic(
            f"ade20k_panoptic_{split}",
            ade20k_panoptic_metadata(),
            image_dir,
            os.path.join(ade, f"ade20k_panoptic_{split}"),
            os.path.join(ade, f"ade20k_panoptic_{split}.json"),
            semseg_dir,
            instance_json,
            family=FAMILY,
            evaluator_type="ade20k_panoptic_seg",
        )
        register_instances_json(
            f"ade20k_instance_{split}",
            ade20k_instance_metadata(),
            instance_json,
            image_dir,
            family=FAMILY,
        )
