#!/usr/bin/env python3
"""Writes ADE20K (SceneParse150) semantic labels in detectron2's convention.

Input:  ADEChallengeData2016/annotations/{training,validation}/*.png (0 = unlabeled, 1..150)
Output: ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png
        (label - 1, so 0..149, and 255 = unlabeled)

    python datasets/prepare_ade20k_sem_seg.py [--root DIR]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from _prepare_common import default_root, require
from PIL import Image
from tqdm import tqdm


def convert_labels(label: np.ndarray) -> np.ndarray:
    """SceneParse150 labels (uint8, 0 = unlabeled, 1..150) -> 0..149 with 255 = unlabeled."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"expected a single-channel label map, got shape {label.shape}")
    if label.size and int(label.max()) > 150:
        raise ValueError(f"label {int(label.max())} is out of SceneParse150's range 0..150")
    out = label.astype(np.int16) - 1
    out[label == 0] = 255
    return out.astype(np.uint8)


def convert_dir(in_dir: str, out_dir: str) -> int:
    os.makedirs(out_dir, exist_ok=True)
    files = sorted(f for f in os.listdir(in_dir) if f.endswith(".png"))
    for name in tqdm(files, desc=os.path.basename(in_dir)):
        with Image.open(os.path.join(in_dir, name)) as im:
            label = np.asarray(im)
        Image.fromarray(convert_labels(label)).save(os.path.join(out_dir, name))
    return len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=default_root(), help="datasets root")
    args = parser.parse_args(argv)
    ade = os.path.join(args.root, "ADEChallengeData2016")
    for dirname in ("training", "validation"):
        in_dir = require(
            os.path.join(ade, "annotations", dirname),
            "ADE20K annotation folder",
            "Download ADEChallengeData2016.zip from http://sceneparsing.csail.mit.edu and unzip "
            "it into the datasets root.",
        )
        n = convert_dir(in_dir, os.path.join(ade, "annotations_detectron2", dirname))
        print(f"{dirname}: wrote {n} label PNGs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
