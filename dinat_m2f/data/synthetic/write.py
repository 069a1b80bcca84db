"""Writing the built-in synthetic dataset: both splits in COCO's panoptic, instance and
semantic formats (tree: `builtin_shapes_paths`), with a completion marker.

Generation is deterministic given the parameters (each image draws from its own seeded
generator) and idempotent: the marker records the parameters and a second call with the same
ones returns at once.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import numpy as np
from PIL import Image

from ...panoptic_ids import id2rgb
from ..datasets.builtin_shapes import DIRNAME, SHAPES_CATEGORIES, builtin_shapes_paths
from ..datasets.layout import datasets_root
from ..formats import encode_rle, mask_bbox_xywh
from .render import render_image

__all__ = ["generate_builtin_shapes"]

MARKER = ".complete.json"
GENERATOR_VERSION = 1
_SPLIT_CODE = {"train": 0, "val": 1}  # part of each image's seed
_FIRST_IMAGE_ID = {"train": 1, "val": 100001}
_THINGS = [c for c in SHAPES_CATEGORIES if c["isthing"]]


def _write_split(
    root: str, split: str, num: int, size: int, seed: int, progress: bool
) -> dict[str, int]:
    paths = builtin_shapes_paths(root, split)
    for key in ("image_root", "panoptic_root", "sem_seg_root"):
        os.makedirs(paths[key], exist_ok=True)
    os.makedirs(os.path.dirname(paths["panoptic_json"]), exist_ok=True)

    images, pan_anns, inst_anns = [], [], []
    iterator = range(num)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=f"builtin_shapes {split}", unit="img")
    for i in iterator:
        rng = np.random.default_rng([seed, _SPLIT_CODE[split], i])
        sample = render_image(rng, size)
        image_id = _FIRST_IMAGE_ID[split] + i
        stem = f"{image_id:012d}"
        Image.fromarray(sample["image"]).save(
            os.path.join(paths["image_root"], stem + ".jpg"), quality=92
        )
        pan_png = os.path.join(paths["panoptic_root"], stem + ".png")
        Image.fromarray(id2rgb(sample["ids"])).save(pan_png)
        Image.fromarray(sample["semantic"]).save(os.path.join(paths["sem_seg_root"], stem + ".png"))
        images.append({"id": image_id, "file_name": stem + ".jpg", "height": size, "width": size})

        segments_info = []
        for sid, cat, m in sample["segments"]:
            bbox = mask_bbox_xywh(m)
            area = int(m.sum())
            segments_info.append(
                {"id": sid, "category_id": cat["id"], "iscrowd": 0, "bbox": bbox, "area": area}
            )
            if cat["isthing"]:
                inst_anns.append(
                    {
                        "id": len(inst_anns) + 1,
                        "image_id": image_id,
                        "category_id": cat["id"],
                        "segmentation": encode_rle(m),
                        "area": float(area),
                        "bbox": [float(v) for v in bbox],
                        "iscrowd": 0,
                    }
                )
        pan_anns.append(
            {"image_id": image_id, "file_name": stem + ".png", "segments_info": segments_info}
        )

    info = {"description": "dinat_m2f builtin_shapes", "version": str(GENERATOR_VERSION)}
    panoptic = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": pan_anns,
        "categories": [dict(c) for c in SHAPES_CATEGORIES],
    }
    instances = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": inst_anns,
        "categories": [
            {"id": c["id"], "name": c["name"], "supercategory": c["supercategory"]} for c in _THINGS
        ],
    }
    for path, obj in ((paths["panoptic_json"], panoptic), (paths["instances_json"], instances)):
        with open(path, "w") as f:
            json.dump(obj, f)
    return {"images": len(images), "segments": sum(len(a["segments_info"]) for a in pan_anns)}


def generate_builtin_shapes(
    root: str | None = None,
    num_train: int = 300,
    num_val: int = 60,
    size: int = 160,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Writes `<root>/builtin_shapes` (root: the datasets root, default `$DETECTRON2_DATASETS`).

    Skips the work when the completion marker records the same parameters; otherwise removes
    what an earlier run wrote there and regenerates.

    Returns:
        {"path", "skipped", "seconds", "params", "train"/"val": {"images", "segments"}}.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train}, {num_val}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    root = datasets_root() if root is None else root
    params = {
        "version": GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "size": int(size),
        "seed": int(seed),
    }
    base = os.path.join(root, DIRNAME)
    marker = os.path.join(base, MARKER)
    if os.path.isfile(marker):
        with open(marker) as f:
            try:
                done = json.load(f)
            except json.JSONDecodeError:
                done = None
        if done is not None and done.get("params") == params:
            counts = done["counts"]
            return {"path": base, "skipped": True, "seconds": 0.0, "params": params, **counts}
    start = time.perf_counter()
    if os.path.isdir(base):  # stale or partial output of another run: start clean
        for name in os.listdir(base):
            if name in (MARKER, "annotations") or name.startswith(("panoptic_", "train", "val")):
                target = os.path.join(base, name)
                shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
    counts = {}
    for split, num in (("train", num_train), ("val", num_val)):
        counts[split] = _write_split(root, split, num, size, seed, progress)
    with open(marker, "w") as f:
        json.dump({"params": params, "counts": counts}, f)
    seconds = time.perf_counter() - start
    return {"path": base, "skipped": False, "seconds": seconds, "params": params, **counts}
