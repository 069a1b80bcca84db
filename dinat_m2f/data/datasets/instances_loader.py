"""Loader and registration of COCO-format instance annotations (an instances json)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from .catalog import replace_metadata, replace_registration
from .errors import DatasetFormatError, check_paths, run_checked

__all__ = ["load_instances_json", "register_instances_json"]


def load_instances_json(
    json_file: str,
    image_root: str,
    meta: Mapping[str, Any],
    *,
    dataset_name: str,
    family: str,
) -> list[dict]:
    """COCO-format instance annotations, category ids mapped with the registered metadata's
    `thing_dataset_id_to_contiguous_id` (so the json's category names need not match ours)."""
    from detectron2.data.datasets import load_coco_json

    check_paths(dataset_name, family, [(json_file, "instances json"), (image_root, "image folder")])

    def load() -> list[dict]:
        dicts = load_coco_json(json_file, image_root, dataset_name=None)
        id_map = meta["thing_dataset_id_to_contiguous_id"]
        for d in dicts:
            for obj in d.get("annotations", []):
                cat = int(obj["category_id"])
                if cat not in id_map:
                    raise DatasetFormatError(
                        dataset_name,
                        family,
                        json_file,
                        f"annotation of image {d['image_id']} has category_id {cat}, not one of "
                        f"the {len(id_map)} registered thing categories",
                    )
                obj["category_id"] = id_map[cat]
        if not dicts:
            raise DatasetFormatError(dataset_name, family, json_file, "it lists no images")
        check_paths(dataset_name, family, [(dicts[0]["file_name"], "image")])
        return dicts

    return run_checked(dataset_name, family, [], json_file, load)


def register_instances_json(
    name: str,
    metadata: Mapping[str, Any],
    json_file: str,
    image_root: str,
    *,
    family: str,
) -> None:
    """Registers COCO-format instances loaded by `load_instances_json` (evaluator "coco")."""
    meta = dict(metadata)
    replace_registration(
        name,
        functools.partial(
            load_instances_json, json_file, image_root, meta, dataset_name=name, family=family
        ),
    )
    replace_metadata(
        name, json_file=json_file, image_root=image_root, evaluator_type="coco", **meta
    )
