"""Built-in synthetic dataset "builtin_shapes": its categories, file tree and registration.

Small images of filled shapes ("things": circle, square, triangle, star) on textured background
regions ("stuff": sky, grass, water, wall), written by `dinat_m2f.data.synthetic`
(`python -m dinat_m2f.data.generate_builtin --root DIR`) in the real formats, in COCO's tree
(root `$DETECTRON2_DATASETS`, see datasets/README.md, "Built-in shapes")::

    builtin_shapes/
      {train,val}/<12-digit id>.jpg
      annotations/panoptic_{train,val}.json     COCO panoptic (segments_info, categories)
      annotations/instances_{train,val}.json    COCO instances (RLE masks)
      panoptic_{train,val}/<id>.png             RGB-encoded segment ids (0 = void)
      panoptic_semseg_{train,val}/<id>.png      contiguous class ids (0..7), 255 = void

and registered through the same functions as COCO:

- `builtin_shapes_{train,val}_panoptic_with_sem_seg` (and the alias
  `builtin_shapes_{train,val}_panoptic`): `register_coco_panoptic_annos_sem_seg`;
- `builtin_shapes_{train,val}_instance`: detectron2's `register_coco_instances`;
- `builtin_shapes_{train,val}_sem_seg`: `register_sem_seg`.
"""

from __future__ import annotations

import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .catalog import guard_registered
from .metadata import panoptic_metadata
from .panoptic_loader import register_coco_panoptic_annos_sem_seg
from .sem_seg_loader import register_sem_seg

FAMILY = "Built-in shapes"
DIRNAME = "builtin_shapes"
SPLITS = ("train", "val")

# Things first (contiguous ids 0..3, equal in the panoptic and instance registrations), then
# stuff (4..7). Dataset ids are not contiguous on purpose, as in COCO.
SHAPES_CATEGORIES: list[dict] = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 40, 40], "supercategory": "shape"},
    {"id": 2, "name": "square", "isthing": 1, "color": [235, 210, 40], "supercategory": "shape"},
    {"id": 3, "name": "triangle", "isthing": 1, "color": [190, 60, 220], "supercategory": "shape"},
    {"id": 4, "name": "star", "isthing": 1, "color": [245, 245, 245], "supercategory": "shape"},
    {"id": 11, "name": "sky", "isthing": 0, "color": [110, 160, 235], "supercategory": "bg"},
    {"id": 12, "name": "grass", "isthing": 0, "color": [60, 150, 50], "supercategory": "bg"},
    {"id": 13, "name": "water", "isthing": 0, "color": [30, 90, 160], "supercategory": "bg"},
    {"id": 14, "name": "wall", "isthing": 0, "color": [130, 85, 65], "supercategory": "bg"},
]
_THINGS = [c for c in SHAPES_CATEGORIES if c["isthing"]]


def builtin_shapes_paths(root: str, split: str) -> dict[str, str]:
    """Paths of one split under the datasets root `root`."""
    base = os.path.join(root, DIRNAME)
    return {
        "base": base,
        "image_root": os.path.join(base, split),
        "panoptic_root": os.path.join(base, f"panoptic_{split}"),
        "sem_seg_root": os.path.join(base, f"panoptic_semseg_{split}"),
        "panoptic_json": os.path.join(base, "annotations", f"panoptic_{split}.json"),
        "instances_json": os.path.join(base, "annotations", f"instances_{split}.json"),
    }


def builtin_shapes_instance_metadata() -> dict:
    return {
        "thing_classes": [c["name"] for c in _THINGS],
        "thing_colors": [c["color"] for c in _THINGS],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(_THINGS)},
    }


def register_builtin_shapes(root: str, prefix: str = "builtin_shapes") -> list[str]:
    """Registers the three formats of both splits under `prefix` (files need not exist yet).

    Returns:
        The registered names.
    """
    from detectron2.data.datasets import register_coco_instances

    names = []
    pan_meta = panoptic_metadata(SHAPES_CATEGORIES)
    for split in SPLITS:
        p = builtin_shapes_paths(root, split)
        register_coco_panoptic_annos_sem_seg(
            f"{prefix}_{split}_panoptic",
            pan_meta,
            p["image_root"],
            p["panoptic_root"],
            p["panoptic_json"],
            p["sem_seg_root"],
            p["instances_json"],
            family=FAMILY,
        )
        inst = f"{prefix}_{split}_instance"
        if inst in DatasetCatalog.list():
            DatasetCatalog.remove(inst)
        if inst in MetadataCatalog.list():
            MetadataCatalog.remove(inst)
        register_coco_instances(
            inst, builtin_shapes_instance_metadata(), p["instances_json"], p["image_root"]
        )
        guard_registered(
            inst, FAMILY, [(p["instances_json"], "instances json"), (p["image_root"], "images")]
        )
        register_sem_seg(
            f"{prefix}_{split}_sem_seg",
            {"stuff_classes": pan_meta["stuff_classes"], "stuff_colors": pan_meta["stuff_colors"]},
            p["image_root"],
            p["sem_seg_root"],
            image_ext="jpg",
            gt_ext="png",
            family=FAMILY,
        )
        names += [
            f"{prefix}_{split}_panoptic_with_sem_seg",
            f"{prefix}_{split}_panoptic",
            inst,
            f"{prefix}_{split}_sem_seg",
        ]
    return names
