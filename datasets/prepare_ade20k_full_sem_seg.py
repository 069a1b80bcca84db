#!/usr/bin/env python3
"""Writes ADE20K-Full semantic segmentation (847 classes) from the official ADE20K_2021_17_01
download, in the layout of `ade20k_full_sem_seg_{train,val}`.

Input:  ADE20K_2021_17_01/index_ade20k.pkl (official index: "filename", "folder",
        "objectnames" and, when present, "objectPresence" = instances of each class per image)
        and, for every indexed image, <folder>/<name>.jpg and <folder>/<name>_seg.png, whose
        class of a pixel is R // 10 * 256 + G (0 = unlabeled; value v is objectnames[v - 1]).
Output: ADE20K_2021_17_01/images_detectron2/{training,validation}/*.jpg  (short side <= 512)
        ADE20K_2021_17_01/annotations_detectron2/{training,validation}/*.tif (uint16 train ids,
            65535 = unlabeled or a class outside the list)
        ADE20K_2021_17_01/ade20k_full_categories.json: [{"id", "trainId", "name"}]

Class list: we do not ship MaskFormer's 847 names. By default the script keeps the classes
present in at least one training and one validation image, most frequent (training images)
first, and prints how many that gives; MaskFormer reports 847 for its list, and this rule may
not reproduce it exactly. `--categories FILE` takes a json list of {"id", "name"} (id = the
class value above) to use a given list instead, in its order.

    python datasets/prepare_ade20k_full_sem_seg.py [--root DIR] [--categories FILE]
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

import numpy as np
from _prepare_common import default_root, require
from PIL import Image
from tqdm import tqdm

from dinat_m2f.checkpoint.safe_load import load_plain_data

BASE = "ADE20K_2021_17_01"
IGNORE = 65535
MAX_SHORT_SIDE = 512
DOWNLOAD_HINT = (
    "Register and download ADE20K_2021_17_01.zip from "
    "https://groups.csail.mit.edu/vision/datasets/ADE20K/ and unzip it into the datasets root "
    "(index_ade20k.pkl comes with it)."
)


def decode_class_mask(seg: np.ndarray) -> np.ndarray:
    """(H, W) int32 class values of an ADE20K `_seg.png` array (R // 10 * 256 + G)."""
    if seg.ndim != 3 or seg.shape[2] < 3:
        raise ValueError(f"expected an RGB _seg.png, got shape {seg.shape}")
    r = seg[..., 0].astype(np.int32)
    g = seg[..., 1].astype(np.int32)
    return (r // 10) * 256 + g


def split_of(folder: str, filename: str) -> str:
    """ "training" or "validation" from the index's folder (else the file name)."""
    parts = folder.replace("\\", "/").split("/")
    if "validation" in parts:
        return "validation"
    if "training" in parts:
        return "training"
    return "validation" if "_val_" in filename else "training"


def select_classes(presence: np.ndarray, splits: Sequence[str], names: Sequence[str]) -> list[dict]:
    """Classes present in >= 1 training and >= 1 validation image, most training images first.

    Args:
        presence: (num_classes, num_images) counts (class value v is row v - 1).
        splits: split of each image.
        names: class names (objectnames).

    Returns:
        [{"id": class value, "trainId", "name"}].
    """
    splits = np.asarray(splits)
    present = np.asarray(presence) > 0
    n_train = present[:, splits == "training"].sum(axis=1)
    n_val = present[:, splits == "validation"].sum(axis=1)
    keep = np.flatnonzero((n_train > 0) & (n_val > 0))
    order = sorted(keep.tolist(), key=lambda i: (-int(n_train[i]), i))
    return [{"id": i + 1, "trainId": t, "name": str(names[i])} for t, i in enumerate(order)]


def label_lookup(categories: Sequence[dict], max_value: int) -> np.ndarray:
    """Lookup table class value -> train id (IGNORE elsewhere), size max_value + 1."""
    lut = np.full(max_value + 1, IGNORE, dtype=np.uint16)
    for c in categories:
        if 0 < int(c["id"]) <= max_value:
            lut[int(c["id"])] = int(c["trainId"])
    return lut


def resized_size(height: int, width: int, max_short: int = MAX_SHORT_SIDE) -> tuple[int, int]:
    """(h, w) with the short side at most `max_short` (aspect kept)."""
    short = min(height, width)
    if short <= max_short:
        return height, width
    scale = max_short / short
    if height <= width:
        return max_short, int(round(width * scale))
    return int(round(height * scale)), max_short


def resize_nearest(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an integer label map (pixel centers)."""
    h, w = label.shape
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return label[rows[:, None], cols[None, :]]


def convert_image(
    image_path: str, seg_path: str, lut: np.ndarray, out_image: str, out_label: str
) -> None:
    with Image.open(image_path) as im:
        image = im.convert("RGB")
    with Image.open(seg_path) as im:
        classes = decode_class_mask(np.asarray(im.convert("RGB")))
    if classes.shape != (image.height, image.width):
        raise ValueError(f"'{seg_path}' is {classes.shape}, its image {image.size[::-1]}")
    h, w = resized_size(image.height, image.width)
    if (h, w) != (image.height, image.width):
        image = image.resize((w, h), Image.BILINEAR)
        classes = resize_nearest(classes, h, w)
    labels = lut[np.minimum(classes, len(lut) - 1)]
    labels[classes >= len(lut)] = IGNORE
    image.save(out_image, quality=95)
    Image.fromarray(labels).save(out_label)


def load_index(path: str) -> dict:
    """The official index, read as plain data only (lists, strings, numpy arrays): a file that
    asks for anything else is refused (`UnsafeCheckpointError`) before any of it runs."""
    index = load_plain_data(path)
    if not isinstance(index, dict):
        raise SystemExit(f"error: '{path}' holds a {type(index).__name__}, not the index dict")
    missing = [k for k in ("filename", "folder", "objectnames") if k not in index]
    if missing:
        raise SystemExit(f"error: '{path}' lacks the keys {missing}; is it index_ade20k.pkl?")
    return index


def image_paths(root: str, folder: str, filename: str) -> str:
    """Path of an indexed image: the index's folders start with ADE20K_2021_17_01/."""
    candidates = [os.path.join(root, folder, filename)]
    if BASE in folder:
        candidates.append(os.path.join(root, BASE, folder.split(BASE, 1)[1].lstrip("/"), filename))
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise SystemExit(f"error: image '{filename}' not found at {candidates}.\n{DOWNLOAD_HINT}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=default_root(), help="datasets root")
    parser.add_argument("--categories", default=None, help="json list of {id, name} to use")
    args = parser.parse_args(argv)
    base = require(os.path.join(args.root, BASE), "ADE20K-Full folder", DOWNLOAD_HINT)
    index = load_index(require(os.path.join(base, "index_ade20k.pkl"), "index", DOWNLOAD_HINT))
    files, folders, names = index["filename"], index["folder"], index["objectnames"]
    splits = [split_of(d, f) for d, f in zip(folders, files)]
    paths = [image_paths(args.root, d, f) for d, f in zip(folders, files)]

    if args.categories:
        with open(require(args.categories, "category list", "")) as f:
            given = json.load(f)
        categories = [
            {"id": int(c["id"]), "trainId": t, "name": str(c["name"])} for t, c in enumerate(given)
        ]
    else:
        presence = index.get("objectPresence")
        if presence is not None:
            presence = np.asarray(presence)
            if presence.shape == (len(files), len(names)):
                presence = presence.T
        if presence is None or presence.shape != (len(names), len(files)):
            presence = np.zeros((len(names), len(files)), dtype=np.int32)
            for j, p in enumerate(tqdm(paths, desc="counting classes")):
                with Image.open(p.replace(".jpg", "_seg.png")) as im:
                    values = np.unique(decode_class_mask(np.asarray(im.convert("RGB"))))
                values = values[(values > 0) & (values <= len(names))]
                presence[values - 1, j] = 1
        categories = select_classes(presence, splits, names)
    print(f"{len(categories)} classes (MaskFormer's ADE20K-Full list has 847)")
    with open(os.path.join(base, "ade20k_full_categories.json"), "w") as f:
        json.dump(categories, f, indent=0)

    lut = label_lookup(categories, max(len(names), max(int(c["id"]) for c in categories)))
    for split in ("training", "validation"):
        os.makedirs(os.path.join(base, "images_detectron2", split), exist_ok=True)
        os.makedirs(os.path.join(base, "annotations_detectron2", split), exist_ok=True)
    for path, name, split in tqdm(list(zip(paths, files, splits)), desc="ADE20K-Full"):
        stem = os.path.splitext(name)[0]
        convert_image(
            path,
            path.replace(".jpg", "_seg.png"),
            lut,
            os.path.join(base, "images_detectron2", split, stem + ".jpg"),
            os.path.join(base, "annotations_detectron2", split, stem + ".tif"),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
