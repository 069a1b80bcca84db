"""ADE20K-Full (847 classes): semantic segmentation `ade20k_full_sem_seg_{train,val}`.

Made by datasets/prepare_ade20k_full_sem_seg.py from the official ADE20K_2021_17_01 download
(layout in datasets/README.md, "ADE20K-Full"): images resized to a short side of at most 512
in `images_detectron2/`, uint16 TIFF labels (train ids, 65535 = ignore) in
`annotations_detectron2/`, and the class list `ade20k_full_categories.json` (we do not ship
the 847 names; the script writes them from the official index). Loading reads the class list
into the metadata (`stuff_classes`); it is also read at registration when the file exists.
"""

from __future__ import annotations

import json
import os

from detectron2.data import MetadataCatalog

from .catalog import replace_registration
from .errors import DatasetFormatError, check_paths
from .metadata import distinct_colors
from .sem_seg_loader import load_sem_seg_checked, register_sem_seg

FAMILY = "ADE20K-Full"
CATEGORIES_FILE = "ade20k_full_categories.json"
IGNORE_LABEL = 65535
NUM_CLASSES = 847


def read_categories(path: str, dataset_name: str = "ade20k_full") -> list[dict]:
    """The class list written by the prepare script: a json list of
    `{"id": <official class value>, "trainId": 0..N-1, "name": str}` sorted by trainId."""
    check_paths(dataset_name, FAMILY, [(path, "class list (ade20k_full_categories.json)")])
    try:
        with open(path) as f:
            cats = json.load(f)
        cats = sorted(cats, key=lambda c: int(c["trainId"]))
        names = [str(c["name"]) for c in cats]
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetFormatError(
            dataset_name, FAMILY, path, f"expected a json list of {{id, trainId, name}}: {e}"
        ) from e
    if [int(c["trainId"]) for c in cats] != list(range(len(cats))):
        raise DatasetFormatError(dataset_name, FAMILY, path, "trainIds are not 0..N-1")
    if not names:
        raise DatasetFormatError(dataset_name, FAMILY, path, "the class list is empty")
    return cats


def _set_classes(name: str, cats: list[dict]) -> None:
    meta = MetadataCatalog.get(name)
    names = [c["name"] for c in cats]
    if getattr(meta, "stuff_classes", None) != names:
        for key in ("stuff_classes", "stuff_colors"):
            if hasattr(meta, key):
                delattr(meta, key)
        meta.set(stuff_classes=names, stuff_colors=distinct_colors(len(names)))


def _load(name: str, gt_root: str, image_root: str, categories_file: str) -> list[dict]:
    cats = read_categories(categories_file, name)
    _set_classes(name, cats)
    return load_sem_seg_checked(
        gt_root, image_root, gt_ext="tif", image_ext="jpg", dataset_name=name, family=FAMILY
    )


def register_all_ade20k_full(root: str) -> None:
    base = os.path.join(root, "ADE20K_2021_17_01")
    categories_file = os.path.join(base, CATEGORIES_FILE)
    for split, dirname in (("train", "training"), ("val", "validation")):
        name = f"ade20k_full_sem_seg_{split}"
        image_root = os.path.join(base, "images_detectron2", dirname)
        gt_root = os.path.join(base, "annotations_detectron2", dirname)
        register_sem_seg(
            name,
            {"categories_file": categories_file},
            image_root,
            gt_root,
            image_ext="jpg",
            gt_ext="tif",
            ignore_label=IGNORE_LABEL,
            family=FAMILY,
        )
        # the loader also reads the class list into the metadata
        replace_registration(
            name, lambda n=name, g=gt_root, i=image_root: _load(n, g, i, categories_file)
        )
        if os.path.isfile(categories_file):
            try:
                _set_classes(name, read_categories(categories_file, name))
            except DatasetFormatError:
                pass  # reported when the dataset is loaded
