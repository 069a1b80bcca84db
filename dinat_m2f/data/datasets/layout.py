"""Where the datasets live and how each family is laid out on disk (named in errors)."""

from __future__ import annotations

import os

__all__ = ["LAYOUTS", "datasets_root", "layout_hint"]


def datasets_root() -> str:
    """`$DETECTRON2_DATASETS`, default `./datasets` (detectron2's convention)."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


# Expected layout per dataset family, printed in errors; each key is also a section of
# datasets/README.md.
LAYOUTS: dict[str, str] = {
    "COCO": """coco/
  annotations/instances_{train,val}2017.json, panoptic_{train,val}2017.json
  {train,val}2017/                  images
  panoptic_{train,val}2017/         panoptic PNGs (unzipped from the panoptic annotations)
  panoptic_semseg_{train,val}2017/  made by prepare_coco_semantic_annos_from_panoptic_annos.py""",
    "ADE20K": """ADEChallengeData2016/
  images/{training,validation}/*.jpg
  annotations/{training,validation}/*.png
  annotations_instance/{training,validation}/*.png    the instance download
  annotations_detectron2/{training,validation}/*.png  made by prepare_ade20k_sem_seg.py
  ade20k_panoptic_{train,val}/ and .json              made by prepare_ade20k_pan_seg.py
  ade20k_instance_{train,val}.json                    made by prepare_ade20k_ins_seg.py""",
    "ADE20K-Full": """ADE20K_2021_17_01/
  index_ade20k.pkl, images/ADE/{training,validation}/...  the official download
  images_detectron2/{training,validation}/*.jpg           made by prepare_ade20k_full_sem_seg.py
  annotations_detectron2/{training,validation}/*.tif      made by the same script
  ade20k_full_categories.json                             made by the same script""",
    "Cityscapes": """cityscapes/
  leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png
  gtFine/{train,val,test}/<city>/*_gtFine_{polygons.json,labelIds.png,instanceIds.png}
  gtFine/{train,val,test}/<city>/*_gtFine_labelTrainIds.png  made by prepare_cityscapes.py
  gtFine/cityscapes_panoptic_{train,val}/ and .json          made by prepare_cityscapes.py""",
    "Mapillary Vistas": """mapillary_vistas/
  {training,validation}/images/*.jpg
  {training,validation}/labels/*.png              v1.2 labels: class index per pixel, 65 = void
  {training,validation}/panoptic/*.png, panoptic_2018.json   v1.2 panoptic annotations
  laid out from the download (v1.2 or v2.0) and checked by prepare_mapillary_vistas.py""",
    "Built-in shapes": """builtin_shapes/
  {train,val}/*.jpg
  annotations/{panoptic,instances}_{train,val}.json
  panoptic_{train,val}/*.png, panoptic_semseg_{train,val}/*.png
  made by: python -m dinat_m2f.data.generate_builtin --root $DETECTRON2_DATASETS""",
}


def layout_hint(family: str) -> str:
    """The expected layout of `family` and where datasets/README.md explains it."""
    root = os.path.abspath(datasets_root())
    layout = LAYOUTS.get(family, "")
    return (
        f"Expected layout under $DETECTRON2_DATASETS (now {root}):\n{layout}\n"
        f"See datasets/README.md, section '{family}', for how to download and prepare it."
    )
