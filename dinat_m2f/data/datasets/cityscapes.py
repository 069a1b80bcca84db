"""Cityscapes: detectron2's builtin registrations, guarded.

Names (root `$DETECTRON2_DATASETS`, layout in datasets/README.md, "Cityscapes"), registered by
detectron2 when `detectron2.data.datasets` is imported (importing `dinat_m2f.data` does it):

- `cityscapes_fine_sem_seg_{train,val,test}`: 19 train ids from `*_gtFine_labelTrainIds.png`
  (made by cityscapesscripts' createTrainIdLabelImgs; datasets/prepare_cityscapes.py runs it);
- `cityscapes_fine_instance_seg_{train,val,test}`: instances from the polygons json;
- `cityscapes_fine_panoptic_{train,val}`: `gtFine/cityscapes_panoptic_{train,val}{/,.json}`
  (made by cityscapesscripts' createPanopticImgs) with `labelTrainIds` as semantic labels.

We only wrap their loaders so that loading a missing dataset raises our error.
"""

from __future__ import annotations

import os

import detectron2.data.datasets  # noqa: F401  (registers the builtin names)

from .catalog import guard_registered

FAMILY = "Cityscapes"


def register_all_cityscapes(root: str) -> None:
    base = os.path.join(root, "cityscapes")
    for split in ("train", "val", "test"):
        images = (os.path.join(base, "leftImg8bit", split), "image folder")
        gt = (os.path.join(base, "gtFine", split), "annotation folder")
        for task in ("sem_seg", "instance_seg"):
            guard_registered(f"cityscapes_fine_{task}_{split}", FAMILY, [images, gt])
        pan = os.path.join(base, "gtFine", f"cityscapes_panoptic_{split}")
        guard_registered(
            f"cityscapes_fine_panoptic_{split}",
            FAMILY,
            [images, (pan + ".json", "panoptic json"), (pan, "panoptic PNG folder")],
        )
