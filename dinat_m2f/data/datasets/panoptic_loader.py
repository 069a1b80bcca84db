"""Loader and registration of COCO-format panoptic datasets (panoptic json + PNGs, optionally
semantic PNGs): COCO, ADE20K panoptic, the built-in dataset."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import Any

from .catalog import replace_metadata, replace_registration
from .errors import DatasetFormatError, check_paths

__all__ = [
    "load_coco_panoptic_json",
    "register_coco_panoptic_annos_sem_seg",
    "register_panoptic",
]


def _read_json(dataset_name: str, family: str, path: str, what: str) -> dict:
    check_paths(dataset_name, family, [(path, what)])
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(dataset_name, family, path, f"not valid json ({e})") from e


def _image_id(value: Any) -> Any:
    """COCO ids are ints; ADE20K's are file stems (str): keep strings that are not numbers."""
    if isinstance(value, str) and not value.isdigit():
        return value
    return int(value)


def load_coco_panoptic_json(
    json_file: str,
    image_dir: str,
    gt_dir: str,
    semseg_dir: str | None,
    meta: Mapping[str, Any],
    *,
    dataset_name: str = "?",
    family: str = "COCO",
) -> list[dict]:
    """Dataset dicts of a COCO-format panoptic dataset (with semantic PNGs when given).

    Args:
        json_file: the panoptic json (images, annotations with segments_info, categories).
        image_dir: folder of the images; an image's name comes from the json's "images"
            entry (or, without one, the PNG's stem + ".jpg", COCO's convention).
        gt_dir: folder of the panoptic PNGs.
        semseg_dir: folder of the semantic PNGs (same names as the panoptic PNGs), or None.
        meta: `thing_dataset_id_to_contiguous_id` and `stuff_dataset_id_to_contiguous_id`.

    Returns:
        One dict per image: file_name, image_id, height/width (when the json has them),
        pan_seg_file_name, segments_info (copies with contiguous category_id and "isthing"),
        sem_seg_file_name (when `semseg_dir`).
    """
    info = _read_json(dataset_name, family, json_file, "panoptic json")
    for key in ("annotations",):
        if key not in info:
            raise DatasetFormatError(
                dataset_name, family, json_file, f"no '{key}' key (keys: {sorted(info)})"
            )
    things = meta["thing_dataset_id_to_contiguous_id"]
    stuff = meta["stuff_dataset_id_to_contiguous_id"]
    images = {_image_id(im["id"]): im for im in info.get("images", [])}

    ret = []
    for ann in info["annotations"]:
        image_id = _image_id(ann["image_id"])
        stem = os.path.splitext(ann["file_name"])[0]
        im = images.get(image_id)
        image_name = im["file_name"] if im is not None else stem + ".jpg"
        segments = []
        for seg in ann["segments_info"]:
            seg = dict(seg)
            cat = int(seg["category_id"])
            if cat in things:
                seg["category_id"], seg["isthing"] = things[cat], True
            elif cat in stuff:
                seg["category_id"], seg["isthing"] = stuff[cat], False
            else:
                raise DatasetFormatError(
                    dataset_name,
                    family,
                    json_file,
                    f"segment {seg.get('id')} of image {image_id} has category_id {cat}, "
                    f"which is not one of the {len(stuff)} registered categories",
                )
            segments.append(seg)
        record = {
            "file_name": os.path.join(image_dir, image_name),
            "image_id": image_id,
            "pan_seg_file_name": os.path.join(gt_dir, ann["file_name"]),
            "segments_info": segments,
        }
        if im is not None and "height" in im and "width" in im:
            record["height"], record["width"] = int(im["height"]), int(im["width"])
        if semseg_dir is not None:
            record["sem_seg_file_name"] = os.path.join(semseg_dir, ann["file_name"])
        ret.append(record)

    if not ret:
        raise DatasetFormatError(dataset_name, family, json_file, "it lists no annotations")
    for record in (ret[0], ret[-1]):
        check_paths(
            dataset_name,
            family,
            [(record["file_name"], "image"), (record["pan_seg_file_name"], "panoptic PNG")]
            + ([(record["sem_seg_file_name"], "semantic PNG")] if semseg_dir else []),
        )
    return ret


def register_panoptic(
    name: str,
    metadata: Mapping[str, Any],
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str | None,
    instances_json: str | None,
    *,
    family: str,
    evaluator_type: str = "coco_panoptic_seg",
    ignore_label: int = 255,
) -> None:
    """Registers one COCO-format panoptic dataset (replacing an existing registration of the
    name). Dicts: see `load_coco_panoptic_json`. Metadata: `metadata` (see
    `panoptic_metadata`) plus panoptic_root, panoptic_json, sem_seg_root, image_root,
    json_file (the instances json, for instance AP), evaluator_type, ignore_label (the
    semantic labels' void value) and label_divisor 1000."""
    meta = dict(metadata)
    loader = functools.partial(
        load_coco_panoptic_json,
        panoptic_json,
        image_root,
        panoptic_root,
        sem_seg_root,
        meta,
        dataset_name=name,
        family=family,
    )
    replace_registration(name, loader)
    replace_metadata(
        name,
        sem_seg_root=sem_seg_root,
        panoptic_root=panoptic_root,
        image_root=image_root,
        panoptic_json=panoptic_json,
        json_file=instances_json,
        evaluator_type=evaluator_type,
        ignore_label=ignore_label,
        label_divisor=1000,
        **meta,
    )


def register_coco_panoptic_annos_sem_seg(
    prefix: str,
    metadata: Mapping[str, Any],
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str,
    instances_json: str | None,
    *,
    family: str = "COCO",
) -> None:
    """Registers `prefix + "_with_sem_seg"` and the alias `prefix` (replacing detectron2's
    registration of that name, as Mask2Former does) with `register_panoptic`: the same dicts
    (with sem_seg_file_name) and metadata under both names."""
    for name in (prefix + "_with_sem_seg", prefix):
        register_panoptic(
            name,
            metadata,
            image_root,
            panoptic_root,
            panoptic_json,
            sem_seg_root,
            instances_json,
            family=family,
        )
