#!/usr/bin/env python3
"""Lays out and checks Mapillary Vistas (v1.2 labels, 65 classes) for
`mapillary_vistas_sem_seg_{train,val}` and `mapillary_vistas_panoptic_{train,val}`.

Semantic and panoptic segmentation need no conversion (as in Mask2Former): the v1.2 label
PNGs hold the class index of each pixel (65 = unlabeled, ignored) and the panoptic PNGs and
`panoptic_2018.json` are in COCO's panoptic format. This script puts the download where the
registrations look and checks it, so that a wrong or incomplete tree is reported here, with
the path, instead of deep inside training.

Input (`--source`, default `$root/mapillary_vistas`), the official download unzipped:
  v1.2:  {training,validation}/images/*.jpg, {training,validation}/labels/*.png,
         {training,validation}/panoptic/*.png and panoptic/panoptic_2018.json
  v2.0:  {training,validation}/images/*.jpg and {training,validation}/v1.2/{labels,panoptic}/
         (the v2.0 release carries the v1.2 annotations; its own 124-class v2.0/ ones are not
         what Mask2Former's configs train on)
Output: $root/mapillary_vistas/{training,validation}/{images,labels,panoptic}, symlinks into
        the source where it is elsewhere or in the v2.0 layout.
Checks: the json's categories are the 65 v1.2 ones (id, name, isthing); every annotation has
        its image, panoptic PNG and label PNG; the first --check-pngs label PNGs of a split
        have one channel and values 0..65, the panoptic PNGs three channels.

    python datasets/prepare_mapillary_vistas.py [--root DIR] [--source DIR] [--check-pngs N]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from _prepare_common import default_root, require
from PIL import Image

from dinat_m2f.data.datasets.mapillary_vistas import (
    IGNORE_LABEL,
    MAPILLARY_VISTAS_CATEGORIES,
    PANOPTIC_JSON,
    SPLITS,
)

BASE = "mapillary_vistas"
PARTS = ("images", "labels", "panoptic")
HINT = (
    "Download Mapillary Vistas (v1.2, or v2.0 which carries the v1.2 annotations) from "
    "https://www.mapillary.com/dataset/vistas and unzip it into the datasets root as "
    f"{BASE}/, or pass its folder with --source."
)
MAX_LISTED = 5


class LayoutError(SystemExit):
    """The download is not Mapillary Vistas v1.2 as expected: the message names the path."""

    def __init__(self, path: str, problem: str):
        self.path = path
        super().__init__(
            f"error: '{os.path.abspath(path)}': {problem}\n{HINT}\n"
            "See datasets/README.md, section 'Mapillary Vistas'."
        )


def source_parts(source_split: str) -> dict[str, str]:
    """Where images / labels / panoptic of one split are in a v1.2 or v2.0 download."""
    v12 = os.path.join(source_split, "v1.2")
    annotations = v12 if os.path.isdir(os.path.join(v12, "labels")) else source_split
    return {
        "images": os.path.join(source_split, "images"),
        "labels": os.path.join(annotations, "labels"),
        "panoptic": os.path.join(annotations, "panoptic"),
    }


def link_split(source_split: str, target_split: str) -> list[str]:
    """Makes target_split/{images,labels,panoptic} point at the source's; returns the links
    made. An existing entry is kept when it is the source's folder, else an error."""
    made = []
    os.makedirs(target_split, exist_ok=True)
    for part, src in source_parts(source_split).items():
        require(src, f"Mapillary Vistas {part} folder", HINT)
        dst = os.path.join(target_split, part)
        if os.path.lexists(dst):
            if os.path.realpath(dst) != os.path.realpath(src):
                raise LayoutError(dst, f"exists and is not {src}; remove it or pass that --source")
            continue
        os.symlink(os.path.relpath(os.path.realpath(src), target_split), dst)
        made.append(dst)
    return made


def check_categories(json_path: str, categories: list) -> None:
    expected = [(c["id"], c["name"], int(c["isthing"])) for c in MAPILLARY_VISTAS_CATEGORIES]
    try:
        found = [(int(c["id"]), c["name"], int(c["isthing"])) for c in categories]
    except (KeyError, TypeError, ValueError) as e:
        raise LayoutError(json_path, f"categories without id / name / isthing ({e})") from e
    if found != expected:
        differ = [(f, e) for f, e in zip(found, expected) if f != e][:1]
        detail = f" (first difference: {differ[0][0]} instead of {differ[0][1]})" if differ else ""
        raise LayoutError(
            json_path,
            f"has {len(found)} categories, not the {len(expected)} of "
            f"Mapillary Vistas v1.2{detail}; a v2.0 json? use the "
            "v1.2 annotations",
        )


def check_split(split_dir: str, check_pngs: int) -> int:
    """Checks one split of the laid-out tree; returns its number of images."""
    parts = {
        part: require(os.path.join(split_dir, part), f"Mapillary Vistas {part} folder", HINT)
        for part in PARTS
    }
    json_path = require(os.path.join(parts["panoptic"], PANOPTIC_JSON), "panoptic json", HINT)
    try:
        with open(json_path) as f:
            info = json.load(f)
    except json.JSONDecodeError as e:
        raise LayoutError(json_path, f"not valid json ({e})") from e
    for key in ("images", "annotations", "categories"):
        if key not in info:
            raise LayoutError(json_path, f"no '{key}' key (keys: {sorted(info)})")
    check_categories(json_path, info["categories"])
    names = {part: set(os.listdir(path)) for part, path in parts.items()}
    images = {im["id"]: im["file_name"] for im in info["images"]}
    missing = []
    for ann in info["annotations"]:
        stem = os.path.splitext(ann["file_name"])[0]
        wanted = [
            ("images", images.get(ann["image_id"], stem + ".jpg")),
            ("panoptic", ann["file_name"]),
            ("labels", ann["file_name"]),
        ]
        missing += [os.path.join(parts[p], n) for p, n in wanted if n not in names[p]]
    if missing:
        listed = "\n  ".join(missing[:MAX_LISTED])
        raise LayoutError(
            split_dir, f"{len(missing)} files listed by {PANOPTIC_JSON} are missing:\n  {listed}"
        )
    for ann in info["annotations"][:check_pngs]:
        label_path = os.path.join(parts["labels"], ann["file_name"])
        with Image.open(label_path) as im:
            labels = np.asarray(im)
        if labels.ndim != 2:
            raise LayoutError(label_path, f"a label PNG has one channel, this one {labels.shape}")
        if labels.size and labels.max() > IGNORE_LABEL:
            raise LayoutError(
                label_path,
                f"label {labels.max()} is above {IGNORE_LABEL} (v1.2 "
                "labels are 0..64 and 65 = unlabeled)",
            )
        pan_path = os.path.join(parts["panoptic"], ann["file_name"])
        with Image.open(pan_path) as im:
            if im.mode != "RGB":
                raise LayoutError(pan_path, f"a panoptic PNG is RGB, this one {im.mode}")
    return len(info["annotations"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=default_root(), help="datasets root")
    parser.add_argument(
        "--source", default=None, help=f"the unzipped download (default: $root/{BASE})"
    )
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument(
        "--check-pngs",
        type=int,
        default=20,
        metavar="N",
        help="label / panoptic PNGs opened per split (the others are only checked to exist)",
    )
    args = parser.parse_args(argv)
    target = os.path.join(args.root, BASE)
    source = require(args.source or target, "Mapillary Vistas folder", HINT)
    for split in args.splits:
        dirname = SPLITS[split]
        source_split = require(
            os.path.join(source, dirname), f"Mapillary Vistas {dirname} folder", HINT
        )
        target_split = os.path.join(target, dirname)
        for link in link_split(source_split, target_split):
            print(f"linked {link} -> {os.readlink(link)}")
        count = check_split(target_split, args.check_pngs)
        print(f"{target_split}: {count} images with panoptic and label PNGs: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
