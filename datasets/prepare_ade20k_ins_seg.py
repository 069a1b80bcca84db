#!/usr/bin/env python3
"""Writes ADE20K instance annotations (COCO instances format, RLE masks) from the instance
annotations of the 2017 instance-segmentation challenge.

Input:  ADEChallengeData2016/images/{training,validation}/*.jpg
        ADEChallengeData2016/annotations_instance/{training,validation}/*.png
            RGB; R = instance class 1..100 (0 none), G = instance number (0 none)
Output: ADEChallengeData2016/ade20k_instance_{train,val}.json
        categories: the 100 thing classes with ids 0..149 (SceneParse150 label - 1), as the
        panoptic json; image ids are the file stems.

    python datasets/prepare_ade20k_ins_seg.py [--root DIR] [--catid-mapping FILE]
"""

from __future__ import annotations

import os

import numpy as np
from _prepare_common import require
from PIL import Image
from prepare_ade20k_pan_seg import (
    INSTANCE_HINT,
    ade20k_images,
    instance_segments,
    run_on_ade20k_splits,
    write_coco_json,
)

from dinat_m2f.data.datasets.ade20k import ADE20K_150_CATEGORIES
from dinat_m2f.data.formats import encode_rle, mask_bbox_xywh


def instance_annotations(
    instance: np.ndarray, image_id, first_ann_id: int, catid_mapping: dict, path: str = "?"
) -> list[dict]:
    """COCO annotations (RLE, area, bbox, iscrowd 0) of the instances of one instance PNG."""
    anns = []
    for cat, mask in instance_segments(instance, catid_mapping, path):
        anns.append(
            {
                "id": first_ann_id + len(anns),
                "image_id": image_id,
                "category_id": int(cat),
                "segmentation": encode_rle(mask),
                "area": float(mask.sum()),
                "bbox": [float(v) for v in mask_bbox_xywh(mask)],
                "iscrowd": 0,
            }
        )
    return anns


def thing_categories() -> list[dict]:
    return [{"id": c["id"], "name": c["name"]} for c in ADE20K_150_CATEGORIES if c["isthing"]]


def convert_split(ade: str, split: str, dirname: str, catid_mapping: dict) -> int:
    image_dir = require(os.path.join(ade, "images", dirname), "ADE20K image folder", "")
    ins_dir = require(
        os.path.join(ade, "annotations_instance", dirname), "ADE20K instance folder", INSTANCE_HINT
    )
    images, annotations = [], []
    for stem, image in ade20k_images(image_dir, f"ade20k_instance_{split}"):
        ins_path = require(os.path.join(ins_dir, stem + ".png"), "instance PNG", INSTANCE_HINT)
        with Image.open(ins_path) as im:
            instance = np.asarray(im)
        images.append(image)
        annotations += instance_annotations(
            instance, stem, len(annotations) + 1, catid_mapping, ins_path
        )
    write_coco_json(
        os.path.join(ade, f"ade20k_instance_{split}.json"), images, annotations, thing_categories()
    )
    return len(images)


def main(argv: list[str] | None = None) -> int:
    return run_on_ade20k_splits(
        __doc__.split("\n\n")[0],
        argv,
        convert_split,
        "{split}: wrote ade20k_instance_{split}.json for {n} images",
    )


if __name__ == "__main__":
    raise SystemExit(main())
