"""Mapillary Vistas (v1.2, 65 classes): semantic and panoptic registrations, as Mask2Former's.

Registered names (root `$DETECTRON2_DATASETS`, layout in datasets/README.md, "Mapillary
Vistas"; `datasets/prepare_mapillary_vistas.py` lays out and checks a download):

- `mapillary_vistas_sem_seg_{train,val}`: `{training,validation}/images/*.jpg` with the label
  PNGs of `{training,validation}/labels/*.png` (class index per pixel: 0..64 the evaluated
  classes, 65 = "void--unlabeled", the ignore label);
- `mapillary_vistas_panoptic_{train,val}`: COCO-format panoptic PNGs and
  `{training,validation}/panoptic/panoptic_2018.json` (category ids 1..65 = label index + 1;
  37 things), with the label PNGs as semantic labels. Evaluated by PQ (evaluator type
  "mapillary_vistas_panoptic_seg") and, with SEMANTIC_ON, mIoU.

Facts of the official data (v1.2 `config.json`): the 66 labels in index order, their colors,
which have instances, and that the last one (unlabeled) is not evaluated.
"""

from __future__ import annotations

import os

from .metadata import panoptic_metadata
from .panoptic_loader import register_panoptic
from .sem_seg_loader import register_sem_seg

FAMILY = "Mapillary Vistas"
IGNORE_LABEL = 65  # "void--unlabeled": Mapillary's ignore value, not 255
SPLITS = {"train": "training", "val": "validation"}
PANOPTIC_JSON = "panoptic_2018.json"

# label index (= panoptic category id - 1) -> (name, readable name, color, has instances)
MAPILLARY_VISTAS_LABELS: tuple[tuple[str, str, tuple[int, int, int], int], ...] = (
    ("animal--bird", "Bird", (165, 42, 42), 1),
    ("animal--ground-animal", "Ground Animal", (0, 192, 0), 1),
    ("construction--barrier--curb", "Curb", (196, 196, 196), 0),
    ("construction--barrier--fence", "Fence", (190, 153, 153), 0),
    ("construction--barrier--guard-rail", "Guard Rail", (180, 165, 180), 0),
    ("construction--barrier--other-barrier", "Barrier", (90, 120, 150), 0),
    ("construction--barrier--wall", "Wall", (102, 102, 156), 0),
    ("construction--flat--bike-lane", "Bike Lane", (128, 64, 255), 0),
    ("construction--flat--crosswalk-plain", "Crosswalk - Plain", (140, 140, 200), 1),
    ("construction--flat--curb-cut", "Curb Cut", (170, 170, 170), 0),
    ("construction--flat--parking", "Parking", (250, 170, 160), 0),
    ("construction--flat--pedestrian-area", "Pedestrian Area", (96, 96, 96), 0),
    ("construction--flat--rail-track", "Rail Track", (230, 150, 140), 0),
    ("construction--flat--road", "Road", (128, 64, 128), 0),
    ("construction--flat--service-lane", "Service Lane", (110, 110, 110), 0),
    ("construction--flat--sidewalk", "Sidewalk", (244, 35, 232), 0),
    ("construction--structure--bridge", "Bridge", (150, 100, 100), 0),
    ("construction--structure--building", "Building", (70, 70, 70), 0),
    ("construction--structure--tunnel", "Tunnel", (150, 120, 90), 0),
    ("human--person", "Person", (220, 20, 60), 1),
    ("human--rider--bicyclist", "Bicyclist", (255, 0, 0), 1),
    ("human--rider--motorcyclist", "Motorcyclist", (255, 0, 100), 1),
    ("human--rider--other-rider", "Other Rider", (255, 0, 200), 1),
    ("marking--crosswalk-zebra", "Lane Marking - Crosswalk", (200, 128, 128), 1),
    ("marking--general", "Lane Marking - General", (255, 255, 255), 0),
    ("nature--mountain", "Mountain", (64, 170, 64), 0),
    ("nature--sand", "Sand", (230, 160, 50), 0),
    ("nature--sky", "Sky", (70, 130, 180), 0),
    ("nature--snow", "Snow", (190, 255, 255), 0),
    ("nature--terrain", "Terrain", (152, 251, 152), 0),
    ("nature--vegetation", "Vegetation", (107, 142, 35), 0),
    ("nature--water", "Water", (0, 170, 30), 0),
    ("object--banner", "Banner", (255, 255, 128), 1),
    ("object--bench", "Bench", (250, 0, 30), 1),
    ("object--bike-rack", "Bike Rack", (100, 140, 180), 1),
    ("object--billboard", "Billboard", (220, 220, 220), 1),
    ("object--catch-basin", "Catch Basin", (220, 128, 128), 1),
    ("object--cctv-camera", "CCTV Camera", (222, 40, 40), 1),
    ("object--fire-hydrant", "Fire Hydrant", (100, 170, 30), 1),
    ("object--junction-box", "Junction Box", (40, 40, 40), 1),
    ("object--mailbox", "Mailbox", (33, 33, 33), 1),
    ("object--manhole", "Manhole", (100, 128, 160), 1),
    ("object--phone-booth", "Phone Booth", (142, 0, 0), 1),
    ("object--pothole", "Pothole", (70, 100, 150), 0),
    ("object--street-light", "Street Light", (210, 170, 100), 1),
    ("object--support--pole", "Pole", (153, 153, 153), 1),
    ("object--support--traffic-sign-frame", "Traffic Sign Frame", (128, 128, 128), 1),
    ("object--support--utility-pole", "Utility Pole", (0, 0, 80), 1),
    ("object--traffic-light", "Traffic Light", (250, 170, 30), 1),
    ("object--traffic-sign--back", "Traffic Sign (Back)", (192, 192, 192), 1),
    ("object--traffic-sign--front", "Traffic Sign (Front)", (220, 220, 0), 1),
    ("object--trash-can", "Trash Can", (140, 140, 20), 1),
    ("object--vehicle--bicycle", "Bicycle", (119, 11, 32), 1),
    ("object--vehicle--boat", "Boat", (150, 0, 255), 1),
    ("object--vehicle--bus", "Bus", (0, 60, 100), 1),
    ("object--vehicle--car", "Car", (0, 0, 142), 1),
    ("object--vehicle--caravan", "Caravan", (0, 0, 90), 1),
    ("object--vehicle--motorcycle", "Motorcycle", (0, 0, 230), 1),
    ("object--vehicle--on-rails", "On Rails", (0, 80, 100), 0),
    ("object--vehicle--other-vehicle", "Other Vehicle", (128, 64, 64), 1),
    ("object--vehicle--trailer", "Trailer", (0, 0, 110), 1),
    ("object--vehicle--truck", "Truck", (0, 0, 70), 1),
    ("object--vehicle--wheeled-slow", "Wheeled Slow", (0, 0, 192), 1),
    ("void--car-mount", "Car Mount", (32, 32, 32), 0),
    ("void--ego-vehicle", "Ego Vehicle", (120, 10, 10), 0),
)  # fmt: skip
assert len(MAPILLARY_VISTAS_LABELS) == 65

# Panoptic categories as in panoptic_2018.json: id = label index + 1, the readable name.
MAPILLARY_VISTAS_CATEGORIES: list[dict] = [
    {"id": i + 1, "name": readable, "supercategory": name, "isthing": things, "color": list(color)}
    for i, (name, readable, color, things) in enumerate(MAPILLARY_VISTAS_LABELS)
]


def mapillary_vistas_sem_seg_metadata() -> dict:
    """The 65 evaluated classes (readable names) and their colors."""
    return {
        "stuff_classes": [readable for _, readable, _, _ in MAPILLARY_VISTAS_LABELS],
        "stuff_colors": [list(color) for _, _, color, _ in MAPILLARY_VISTAS_LABELS],
    }


def mapillary_vistas_panoptic_metadata() -> dict:
    """Panoptic metadata (contiguous id = label index; things keep their label index)."""
    return panoptic_metadata(MAPILLARY_VISTAS_CATEGORIES)


def register_all_mapillary_vistas(root: str) -> None:
    base = os.path.join(root, "mapillary_vistas")
    for split, dirname in SPLITS.items():
        image_dir = os.path.join(base, dirname, "images")
        label_dir = os.path.join(base, dirname, "labels")
        panoptic_dir = os.path.join(base, dirname, "panoptic")
        register_sem_seg(
            f"mapillary_vistas_sem_seg_{split}",
            mapillary_vistas_sem_seg_metadata(),
            image_dir,
            label_dir,
            image_ext="jpg",
            gt_ext="png",
            ignore_label=IGNORE_LABEL,
            family=FAMILY,
        )
        register_panoptic(
            f"mapillary_vistas_panoptic_{split}",
            mapillary_vistas_panoptic_metadata(),
            image_dir,
            panoptic_dir,
            os.path.join(panoptic_dir, PANOPTIC_JSON),
            label_dir,
            None,
            family=FAMILY,
            evaluator_type="mapillary_vistas_panoptic_seg",
            ignore_label=IGNORE_LABEL,
        )
