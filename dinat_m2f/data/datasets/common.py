"""Shared pieces of the dataset registrations: root folder, layout errors, generic loaders.

Registration is lazy: registering a dataset only records paths. Loading it (calling
`DatasetCatalog.get(name)`) checks the files first and raises `DatasetNotFoundError` (a
`FileNotFoundError`) or `DatasetFormatError` (a `ValueError`) naming the path, the expected
layout and the section of `datasets/README.md` that explains how to get it.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable, Mapping, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = [
    "DatasetFormatError",
    "DatasetNotFoundError",
    "LAYOUTS",
    "check_paths",
    "datasets_root",
    "distinct_colors",
    "guard_registered",
    "load_coco_panoptic_json",
    "load_instances_json",
    "load_sem_seg_checked",
    "panoptic_metadata",
    "register_coco_panoptic_annos_sem_seg",
    "register_instances_json",
    "register_panoptic",
    "register_sem_seg",
    "replace_metadata",
    "replace_registration",
]


def datasets_root() -> str:
    """`$DETECTRON2_DATASETS`, default `./datasets` (detectron2's convention)."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


# Expected layout per dataset family, printed in errors; each key is also a section of
# datasets/README.md.
LAYOUTS: dict[str, str] = {
    "COCO": """coco/
  annotations/instances_{train,val}2017.json, panoptic_{train,val}2017.json
  {train,val}2017/                  images
  panoptic_{train,val}2017/         panoptic PNGs (unzipped from the panoptic annotations)
  panoptic_semseg_{train,val}2017/  made by prepare_coco_semantic_annos_from_panoptic_annos.py""",
    "ADE20K": """ADEChallengeData2016/
  images/{training,validation}/*.jpg
  annotations/{training,validation}/*.png
  annotations_instance/{training,validation}/*.png    the instance download
  annotations_detectron2/{training,validation}/*.png  made by prepare_ade20k_sem_seg.py
  ade20k_panoptic_{train,val}/ and .json              made by prepare_ade20k_pan_seg.py
  ade20k_instance_{train,val}.json                    made by prepare_ade20k_ins_seg.py""",
    "ADE20K-Full": """ADE20K_2021_17_01/
  index_ade20k.pkl, images/ADE/{training,validation}/...  the official download
  images_detectron2/{training,validation}/*.jpg           made by prepare_ade20k_full_sem_seg.py
  annotations_detectron2/{training,validation}/*.tif      made by the same script
  ade20k_full_categories.json                             made by the same script""",
    "Cityscapes": """cityscapes/
  leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png
  gtFine/{train,val,test}/<city>/*_gtFine_{polygons.json,labelIds.png,instanceIds.png}
  gtFine/{train,val,test}/<city>/*_gtFine_labelTrainIds.png  made by prepare_cityscapes.py
  gtFine/cityscapes_panoptic_{train,val}/ and .json          made by prepare_cityscapes.py""",
    "Built-in shapes": """builtin_shapes/
  {train,val}/*.jpg
  annotations/{panoptic,instances}_{train,val}.json
  panoptic_{train,val}/*.png, panoptic_semseg_{train,val}/*.png
  made by: python -m dinat_m2f.data.generate_builtin --root $DETECTRON2_DATASETS""",
}


def _layout_hint(family: str) -> str:
    root = os.path.abspath(datasets_root())
    layout = LAYOUTS.get(family, "")
    return (
        f"Expected layout under $DETECTRON2_DATASETS (now {root}):\n{layout}\n"
        f"See datasets/README.md, section '{family}', for how to download and prepare it."
    )


class DatasetNotFoundError(FileNotFoundError):
    """A registered dataset's files are missing."""

    def __init__(self, dataset_name: str, family: str, path: str, what: str):
        self.dataset_name, self.path = dataset_name, path
        super().__init__(
            f"Dataset '{dataset_name}': {what} '{os.path.abspath(path)}' does not exist.\n"
            + _layout_hint(family)
        )


class DatasetFormatError(ValueError):
    """A registered dataset's files exist but do not have the expected format."""

    def __init__(self, dataset_name: str, family: str, path: str, problem: str):
        self.dataset_name, self.path = dataset_name, path
        super().__init__(
            f"Dataset '{dataset_name}': '{os.path.abspath(path)}' is malformed: {problem}\n"
            + _layout_hint(family)
        )


def check_paths(dataset_name: str, family: str, paths: Sequence[tuple[str, str]]) -> None:
    """Raises `DatasetNotFoundError` for the first missing `(path, what)`."""
    for path, what in paths:
        if not os.path.exists(path):
            raise DatasetNotFoundError(dataset_name, family, path, what)


def _run_checked(
    dataset_name: str,
    family: str,
    required: Sequence[tuple[str, str]],
    context_path: str,
    fn: Callable[[], list],
) -> list:
    """Checks `required`, runs the loader, turns its low-level errors into ours."""
    check_paths(dataset_name, family, required)
    try:
        return fn()
    except (DatasetNotFoundError, DatasetFormatError):
        raise
    except FileNotFoundError as e:
        raise DatasetNotFoundError(
            dataset_name, family, e.filename or context_path, "a file it lists"
        ) from e
    except (KeyError, ValueError, TypeError, AssertionError, IndexError) as e:
        problem = f"{type(e).__name__}: {e}"
        raise DatasetFormatError(dataset_name, family, context_path, problem) from e


def replace_registration(name: str, loader: Callable[[], list]) -> None:
    """Registers `loader` under `name`, replacing an existing registration of that name."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, loader)


def replace_metadata(name: str, **metadata: Any) -> None:
    """Sets the metadata of `name` to exactly `metadata` (dropping what was set before)."""
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(**metadata)


def guard_registered(name: str, family: str, required: Sequence[tuple[str, str]]) -> None:
    """Wraps an already-registered loader (e.g. detectron2's builtin COCO or ADE20K ones) so a
    missing or malformed dataset raises our errors. No-op if `name` is not registered."""
    if name not in DatasetCatalog.list():
        return
    inner = DatasetCatalog[name]
    if getattr(inner, "_dinat_m2f_guarded", False):
        return
    context = required[0][0] if required else datasets_root()
    guarded = functools.partial(_run_checked, name, family, list(required), context, inner)
    guarded._dinat_m2f_guarded = True  # type: ignore[attr-defined]
    replace_registration(name, guarded)


# --- metadata ----------------------------------------------------------------------------
def distinct_colors(n: int) -> list[list[int]]:
    """`n` fixed, well-spread RGB colors (golden-ratio hues, alternating brightness) for
    visualizing datasets whose official palette we do not ship."""
    import colorsys

    colors = []
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0
        sat, val = (0.85, 0.95) if i % 2 == 0 else (0.6, 0.7)
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colors.append([int(round(255 * r)), int(round(255 * g)), int(round(255 * b))])
    return colors


def panoptic_metadata(categories: Sequence[Mapping[str, Any]]) -> dict:
    """Mask2Former's panoptic metadata of a category list (dicts with id, name, isthing, color).

    Contiguous ids are positions in `categories` (all classes, things and stuff):
    `thing_classes`/`thing_colors` list the things only, `stuff_classes`/`stuff_colors` all
    classes; `thing_dataset_id_to_contiguous_id` maps the things' dataset ids and
    `stuff_dataset_id_to_contiguous_id` maps every dataset id (so the semantic evaluator can
    map all classes back), as in Mask2Former.
    """
    ids = [int(c["id"]) for c in categories]
    if len(set(ids)) != len(ids):
        raise ValueError(f"panoptic_metadata: duplicate category ids in {ids}")
    return {
        "thing_classes": [c["name"] for c in categories if c["isthing"]],
        "thing_colors": [list(c["color"]) for c in categories if c["isthing"]],
        "stuff_classes": [c["name"] for c in categories],
        "stuff_colors": [list(c["color"]) for c in categories],
        "thing_dataset_id_to_contiguous_id": {
            int(c["id"]): i for i, c in enumerate(categories) if c["isthing"]
        },
        "stuff_dataset_id_to_contiguous_id": {int(c["id"]): i for i, c in enumerate(categories)},
    }


# --- COCO panoptic + semantic ------------------------------------------------------------
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
) -> None:
    """Registers one COCO-format panoptic dataset (replacing an existing registration of the
    name). Dicts: see `load_coco_panoptic_json`. Metadata: `metadata` (see
    `panoptic_metadata`) plus panoptic_root, panoptic_json, sem_seg_root, image_root,
    json_file (the instances json, for instance AP), evaluator_type, ignore_label 255 and
    label_divisor 1000."""
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
        ignore_label=255,
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


# --- semantic segmentation ---------------------------------------------------------------
def load_sem_seg_checked(
    gt_root: str,
    image_root: str,
    *,
    gt_ext: str,
    image_ext: str,
    dataset_name: str,
    family: str,
    extra_required: Sequence[tuple[str, str]] = (),
) -> list[dict]:
    """detectron2's `load_sem_seg` after checking both folders exist and are not empty."""
    from detectron2.data.datasets import load_sem_seg

    check_paths(
        dataset_name,
        family,
        [(image_root, "image folder"), (gt_root, "label folder"), *extra_required],
    )
    if not any(f.endswith(gt_ext) for f in os.listdir(gt_root)):
        raise DatasetFormatError(dataset_name, family, gt_root, f"no '*{gt_ext}' label files")
    return _run_checked(
        dataset_name,
        family,
        [],
        gt_root,
        lambda: load_sem_seg(gt_root, image_root, gt_ext=gt_ext, image_ext=image_ext),
    )


def register_sem_seg(
    name: str,
    metadata: Mapping[str, Any],
    image_root: str,
    sem_seg_root: str,
    *,
    image_ext: str = "jpg",
    gt_ext: str = "png",
    ignore_label: int = 255,
    family: str,
    evaluator_type: str = "sem_seg",
) -> None:
    """Registers a semantic segmentation dataset: label files in `sem_seg_root` named like the
    images in `image_root` (other extension); labels are contiguous class ids, `ignore_label`
    for void. Metadata: `metadata` (needs stuff_classes) plus image_root, sem_seg_root,
    evaluator_type and ignore_label."""
    replace_registration(
        name,
        functools.partial(
            load_sem_seg_checked,
            sem_seg_root,
            image_root,
            gt_ext=gt_ext,
            image_ext=image_ext,
            dataset_name=name,
            family=family,
        ),
    )
    replace_metadata(
        name,
        image_root=image_root,
        sem_seg_root=sem_seg_root,
        evaluator_type=evaluator_type,
        ignore_label=ignore_label,
        **metadata,
    )


# --- COCO-format instances ---------------------------------------------------------------
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

    return _run_checked(dataset_name, family, [], json_file, load)


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
