#!/usr/bin/env python3
"""Writes COCO's semantic labels from its panoptic annotations (for Mask2Former's
`coco_2017_{train,val}_panoptic_with_sem_seg`).

Input:  coco/annotations/panoptic_{train,val}2017.json and coco/panoptic_{train,val}2017/*.png
Output: coco/panoptic_semseg_{train,val}2017/*.png: uint8, each pixel the position of its
        segment's category in detectron2's COCO_CATEGORIES (0..132), 255 for void.

    python datasets/prepare_coco_semantic_annos_from_panoptic_annos.py [--root DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from collections.abc import Mapping, Sequence
from multiprocessing import Pool

import numpy as np
from _prepare_common import default_root, require
from PIL import Image
from tqdm import tqdm

from dinat_m2f.data.formats import panoptic_to_semantic
from dinat_m2f.panoptic_ids import rgb2id


def category_to_label(categories: Sequence[Mapping]) -> dict[int, int]:
    """Dataset category id -> position in `categories` (the semantic label)."""
    if len(categories) > 255:
        raise ValueError(f"{len(categories)} categories do not fit uint8 labels with 255 = void")
    return {int(c["id"]): i for i, c in enumerate(categories)}


def convert_one(
    panoptic_png: str, semantic_png: str, segments_info: Sequence[Mapping], id_map: Mapping
) -> None:
    """Converts one panoptic PNG (RGB-encoded ids) into a semantic PNG."""
    with Image.open(panoptic_png) as im:
        ids = rgb2id(np.asarray(im.convert("RGB")))
    Image.fromarray(panoptic_to_semantic(ids, segments_info, id_map)).save(semantic_png)


def _convert_args(args: tuple, id_map: Mapping) -> None:
    convert_one(*args, id_map)


def convert_split(
    panoptic_json: str,
    panoptic_root: str,
    sem_seg_root: str,
    categories: Sequence[Mapping],
    workers: int = 1,
) -> int:
    """Converts every annotation of a COCO panoptic json; returns the number of images."""
    with open(panoptic_json) as f:
        anns = json.load(f)["annotations"]
    os.makedirs(sem_seg_root, exist_ok=True)
    id_map = category_to_label(categories)
    jobs = [
        (
            os.path.join(panoptic_root, a["file_name"]),
            os.path.join(sem_seg_root, a["file_name"]),
            a["segments_info"],
        )
        for a in anns
    ]
    fn = functools.partial(_convert_args, id_map=id_map)
    desc = os.path.basename(sem_seg_root)
    if workers > 1:
        with Pool(workers) as pool:
            for _ in tqdm(pool.imap_unordered(fn, jobs, chunksize=32), total=len(jobs), desc=desc):
                pass
    else:
        for job in tqdm(jobs, desc=desc):
            fn(job)
    return len(jobs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=default_root(), help="datasets root (has coco/)")
    parser.add_argument("--splits", nargs="+", default=["val2017", "train2017"])
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    args = parser.parse_args(argv)
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    coco = os.path.join(args.root, "coco")
    for split in args.splits:
        pan_json = require(
            os.path.join(coco, "annotations", f"panoptic_{split}.json"),
            "COCO panoptic json",
            "Download panoptic_annotations_trainval2017.zip from https://cocodataset.org and "
            "unzip it into coco/.",
        )
        pan_root = require(
            os.path.join(coco, f"panoptic_{split}"),
            "COCO panoptic PNG folder",
            f"Unzip coco/annotations/panoptic_{split}.zip into coco/ (it holds panoptic_{split}/).",
        )
        n = convert_split(
            pan_json,
            pan_root,
            os.path.join(coco, f"panoptic_semseg_{split}"),
            COCO_CATEGORIES,
            args.workers,
        )
        print(f"{split}: wrote {n} semantic PNGs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
