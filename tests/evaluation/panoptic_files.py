"""Writing tiny COCO-panoptic ground truth / predictions to disk for the evaluation tests."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image


def write_ids_png(path: str, ids: np.ndarray) -> None:
    """(H, W) ids -> RGB PNG with id = R + 256 G + 256**2 B (written without the module under
    test)."""
    ids = np.asarray(ids, dtype=np.int64)
    rgb = np.zeros(ids.shape + (3,), np.uint8)
    rgb[..., 0] = ids & 0xFF
    rgb[..., 1] = (ids >> 8) & 0xFF
    rgb[..., 2] = (ids >> 16) & 0xFF
    Image.fromarray(rgb, mode="RGB").save(path)


def segment(seg_id: int, category_id: int, iscrowd: int = 0, area: int | None = None) -> dict:
    out: dict[str, Any] = {"id": seg_id, "category_id": category_id, "iscrowd": iscrowd}
    if area is not None:
        out["area"] = area
    return out


def write_dataset(
    root: str,
    name: str,
    images: Sequence[tuple[Any, np.ndarray, list[dict]]],
    categories: list[dict] | None = None,
) -> tuple[str, str]:
    """Write `root/name.json` and PNGs in `root/name/` for (image_id, ids, segments_info)
    triples; a segment without "area" gets its pixel count. Returns (json path, folder)."""
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    annotations = []
    for image_id, ids, segments in images:
        file_name = f"{image_id}.png"
        write_ids_png(os.path.join(folder, file_name), ids)
        filled = []
        for s in segments:
            s = dict(s)
            s.setdefault("area", int((np.asarray(ids) == s["id"]).sum()))
            filled.append(s)
        annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": filled})
    data: dict[str, Any] = {"annotations": annotations}
    if categories is not None:
        data["categories"] = categories
    json_path = os.path.join(root, f"{name}.json")
    with open(json_path, "w") as f:
        json.dump(data, f)
    return json_path, folder
