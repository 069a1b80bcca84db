#!/usr/bin/env python3
"""Prepares Cityscapes with cityscapesscripts: `*_gtFine_labelTrainIds.png` (semantic, from
createTrainIdLabelImgs' json2labelImg) and `gtFine/cityscapes_panoptic_{split}{/,.json}`
(panoptic, createPanopticImgs; category ids are Cityscapes label ids, as detectron2 expects).

Input:  cityscapes/leftImg8bit/{train,val,test}/ and cityscapes/gtFine/{train,val,test}/
        (leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from cityscapes-dataset.com)

    python datasets/prepare_cityscapes.py [--root DIR] [--skip-panoptic]
"""

from __future__ import annotations

import argparse
import glob
import os

from _prepare_common import default_root, require
from tqdm import tqdm

HINT = (
    "Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
    "https://www.cityscapes-dataset.com/downloads/ and unzip both into cityscapes/."
)


def make_train_id_labels(cityscapes: str) -> int:
    """Writes *_gtFine_labelTrainIds.png next to every *_gtFine_polygons.json."""
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    files = sorted(glob.glob(os.path.join(cityscapes, "gtFine", "*", "*", "*_gt*_polygons.json")))
    if not files:
        raise SystemExit(f"error: no *_polygons.json under {cityscapes}/gtFine/*/*/.\n{HINT}")
    for f in tqdm(files, desc="labelTrainIds"):
        json2labelImg(f, f.replace("_polygons.json", "_labelTrainIds.png"), "trainIds")
    return len(files)


def make_panoptic(cityscapes: str, splits: list[str]) -> None:
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    gt = os.path.join(cityscapes, "gtFine")
    convert2panoptic(gt, gt, useTrainId=False, setNames=splits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=default_root(), help="datasets root")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="panoptic splits")
    parser.add_argument("--skip-panoptic", action="store_true")
    args = parser.parse_args(argv)
    cityscapes = require(os.path.join(args.root, "cityscapes"), "Cityscapes folder", HINT)
    require(os.path.join(cityscapes, "leftImg8bit"), "Cityscapes image folder", HINT)
    require(os.path.join(cityscapes, "gtFine"), "Cityscapes annotation folder", HINT)
    print(f"wrote labelTrainIds for {make_train_id_labels(cityscapes)} images")
    if not args.skip_panoptic:
        make_panoptic(cityscapes, args.splits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
