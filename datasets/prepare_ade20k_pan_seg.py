#!/usr/bin/env python3
"""Writes ADE20K panoptic annotations (COCO panoptic format) from the SceneParse150 semantic
labels and the instance annotations of the 2017 instance-segmentation challenge.

Input:  ADEChallengeData2016/images/{training,validation}/*.jpg
        ADEChallengeData2016/annotations/{training,validation}/*.png   labels 1..150, 0 void
        ADEChallengeData2016/annotations_instance/{training,validation}/*.png
            RGB; R = instance class 1..100 (0 none), G = instance number (0 none)
Output: ADEChallengeData2016/ade20k_panoptic_{train,val}/*.png (RGB-encoded segment ids)
        ADEChallengeData2016/ade20k_panoptic_{train,val}.json
        categories: ids 0..149 (label - 1), 100 things (the instance classes), 50 stuff.

Stuff segments come from the semantic labels of the 50 stuff classes; thing segments from the
instance PNG (drawn over stuff where they overlap; thing-class pixels without an instance are
void). Areas and boxes are measured on the final PNG.

    python datasets/prepare_ade20k_pan_seg.py [--root DIR] [--catid-mapping FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
from _prepare_common import default_root, require
from PIL import Image
from tqdm import tqdm

from dinat_m2f.data.datasets.ade20k import ADE20K_150_CATEGORIES, ADE20K_INSTANCE_TO_SEMANTIC
from dinat_m2f.data.formats import segment_stats, unique_segment_colors
from dinat_m2f.panoptic_ids import id2rgb

INSTANCE_HINT = (
    "Download the instance annotations (annotations_instance.tar from "
    "http://sceneparsing.csail.mit.edu, 2017 challenge data) and untar them into "
    "ADEChallengeData2016/."
)


def read_catid_mapping(path: str) -> dict[int, int]:
    """Official `ade20k_instance_catid_mapping.txt` (header, then `instance semantic full`
    rows) -> {instance class 1..100: category id 0..149}."""
    mapping: dict[int, int] = {}
    with open(path) as f:
        for i, line in enumerate(f):
            parts = line.split()
            if i == 0 or not parts:
                continue
            ins, sem = int(parts[0]), int(parts[1])
            if mapping.get(ins, sem - 1) != sem - 1:
                raise ValueError(f"{path}: instance class {ins} maps to two semantic classes")
            mapping[ins] = sem - 1
    return mapping


def default_catid_mapping() -> dict[int, int]:
    return {i + 1: sem - 1 for i, sem in enumerate(ADE20K_INSTANCE_TO_SEMANTIC)}


def split_instance_png(instance: np.ndarray, path: str = "?") -> tuple[np.ndarray, np.ndarray]:
    """(class map R, instance number map G) of an instance PNG array, validated."""
    if instance.ndim != 3 or instance.shape[2] < 3 or instance.dtype != np.uint8:
        raise ValueError(
            f"instance annotation '{path}' must be an RGB uint8 PNG (R class, G instance); got "
            f"{instance.dtype} {instance.shape}"
        )
    return instance[..., 0], instance[..., 1]


def instance_segments(
    instance: np.ndarray, catid_mapping: dict[int, int], path: str = "?"
) -> list[tuple[int, np.ndarray]]:
    """[(category id 0..149, mask)] of the instances of an instance PNG, in instance order.

    An instance whose pixels carry several classes takes the most frequent one (warning)."""
    cls_map, ins_map = split_instance_png(instance, path)
    out = []
    for ins in np.unique(ins_map):
        if ins == 0:
            continue
        mask = ins_map == ins
        classes, counts = np.unique(cls_map[mask], return_counts=True)
        if len(classes) > 1:
            warnings.warn(
                f"{path}: instance {ins} has classes {classes.tolist()}; using majority",
                stacklevel=2,
            )
        cls = int(classes[np.argmax(counts)])
        if cls == 0:
            continue
        if cls not in catid_mapping:
            raise ValueError(f"{path}: instance class {cls} is not one of the 100 instance classes")
        out.append((catid_mapping[cls], mask))
    return out


def ade20k_panoptic(
    semantic: np.ndarray,
    instance: np.ndarray,
    catid_mapping: dict[int, int],
    rng: np.random.Generator,
    categories: Sequence[dict] = ADE20K_150_CATEGORIES,
    path: str = "?",
) -> tuple[np.ndarray, list[dict]]:
    """Panoptic annotation of one image.

    Args:
        semantic: (H, W) SceneParse150 labels (1..150, 0 void).
        instance: (H, W, 3) instance PNG array.
        catid_mapping: instance class -> category id (0..149).
        rng: generator of the segment colors.

    Returns:
        ((H, W) int64 segment ids, segments_info list).
    """
    if semantic.shape != instance.shape[:2]:
        raise ValueError(
            f"{path}: semantic {semantic.shape} and instance {instance.shape[:2]} sizes differ"
        )
    by_id = {c["id"]: c for c in categories}
    ids = np.zeros(semantic.shape, dtype=np.int64)
    taken: set[int] = set()
    cats: dict[int, int] = {}
    for label in np.unique(semantic):
        cat = int(label) - 1
        if label == 0 or by_id[cat]["isthing"]:
            continue
        sid, _ = unique_segment_colors(by_id[cat]["color"], taken, rng)
        ids[semantic == label] = sid
        cats[sid] = cat
    for cat, mask in instance_segments(instance, catid_mapping, path):
        sid, _ = unique_segment_colors(by_id[cat]["color"], taken, rng)
        ids[mask] = sid
        cats[sid] = cat
    stats = segment_stats(ids, cats)
    segments = [
        {"id": sid, "category_id": cat, "iscrowd": 0, **stats[sid]}
        for sid, cat in cats.items()
        if stats[sid]["area"] > 0
    ]
    return ids, segments


def ade20k_images(image_dir: str, desc: str) -> Iterator[tuple[str, dict]]:
    """(stem, COCO image entry: id = stem, file_name, width, height) for each .jpg of
    `image_dir`, sorted by name, with a progress bar labelled `desc`."""
    names = sorted(f for f in os.listdir(image_dir) if f.endswith(".jpg"))
    for name in tqdm(names, desc=desc):
        stem = os.path.splitext(name)[0]
        with Image.open(os.path.join(image_dir, name)) as im:
            width, height = im.size
        yield stem, {"id": stem, "file_name": name, "width": width, "height": height}


def write_coco_json(path: str, images: list, annotations: list, categories: list) -> None:
    """The COCO-style json of the panoptic and instance scripts."""
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def convert_split(ade: str, split: str, dirname: str, catid_mapping: dict[int, int]) -> int:
    image_dir = require(os.path.join(ade, "images", dirname), "ADE20K image folder", "")
    sem_dir = require(
        os.path.join(ade, "annotations", dirname),
        "ADE20K annotation folder",
        "Download ADEChallengeData2016.zip from http://sceneparsing.csail.mit.edu.",
    )
    ins_dir = require(
        os.path.join(ade, "annotations_instance", dirname), "ADE20K instance folder", INSTANCE_HINT
    )
    out_dir = os.path.join(ade, f"ade20k_panoptic_{split}")
    os.makedirs(out_dir, exist_ok=True)
    images, annotations = [], []
    for stem, image in ade20k_images(image_dir, f"ade20k_panoptic_{split}"):
        sem_path = require(os.path.join(sem_dir, stem + ".png"), "semantic label", "")
        ins_path = require(os.path.join(ins_dir, stem + ".png"), "instance PNG", INSTANCE_HINT)
        with Image.open(sem_path) as im:
            semantic = np.asarray(im)
        with Image.open(ins_path) as im:
            instance = np.asarray(im)
        rng = np.random.default_rng(len(images))  # segment colors, reproducible per image
        ids, segments = ade20k_panoptic(semantic, instance, catid_mapping, rng, path=ins_path)
        Image.fromarray(id2rgb(ids)).save(os.path.join(out_dir, stem + ".png"))
        images.append(image)
        annotations.append(
            {"image_id": stem, "file_name": stem + ".png", "segments_info": segments}
        )
    write_coco_json(
        os.path.join(ade, f"ade20k_panoptic_{split}.json"),
        images,
        annotations,
        ADE20K_150_CATEGORIES,
    )
    return len(images)


def run_on_ade20k_splits(description: str, argv: list[str] | None, convert, report: str) -> int:
    """The command line shared by the ADE20K panoptic and instance scripts: `--root` and
    `--catid-mapping`, then `convert(ade_folder, split, dirname, mapping)` per split, printing
    `report.format(split=..., n=...)`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", default=default_root(), help="datasets root")
    parser.add_argument(
        "--catid-mapping",
        default=None,
        help="official ade20k_instance_catid_mapping.txt (default: the same table built in)",
    )
    args = parser.parse_args(argv)
    ade = require(
        os.path.join(args.root, "ADEChallengeData2016"),
        "ADE20K folder",
        "Download ADEChallengeData2016.zip from http://sceneparsing.csail.mit.edu.",
    )
    if args.catid_mapping:
        mapping = read_catid_mapping(require(args.catid_mapping, "category mapping file", ""))
    else:
        mapping = default_catid_mapping()
    for split, dirname in (("train", "training"), ("val", "validation")):
        n = convert(ade, split, dirname, mapping)
        print(report.format(split=split, n=n))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_on_ade20k_splits(
        __doc__.split("\n\n")[0],
        argv,
        convert_split,
        "{split}: wrote {n} panoptic PNGs and ade20k_panoptic_{split}.json",
    )


if __name__ == "__main__":
    raise SystemExit(main())
