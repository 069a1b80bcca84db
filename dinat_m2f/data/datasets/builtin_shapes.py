"""Built-in synthetic dataset "builtin_shapes": generator and registration.

Small images of filled shapes ("things": circle, square, triangle, star; several instances per
image, random sizes, rotations and per-class color tints, overlapping with occlusion) on 2-3
procedurally textured background regions ("stuff": sky, grass, water, wall), separated by
1-pixel void lines. A class is recognizable by shape and color (things) or texture and color
(stuff), so a small model learns it in a few CPU minutes.

Written in the real formats, in COCO's tree (root `$DETECTRON2_DATASETS`, see
datasets/README.md, "Built-in shapes")::

    builtin_shapes/
      {train,val}/<12-digit id>.jpg
      annotations/panoptic_{train,val}.json     COCO panoptic (segments_info, categories)
      annotations/instances_{train,val}.json    COCO instances (RLE masks)
      panoptic_{train,val}/<id>.png             RGB-encoded segment ids (0 = void)
      panoptic_semseg_{train,val}/<id>.png      contiguous class ids (0..7), 255 = void

and registered through the same functions as COCO:

- `builtin_shapes_{train,val}_panoptic_with_sem_seg` (and the alias
  `builtin_shapes_{train,val}_panoptic`): `register_coco_panoptic_annos_sem_seg`;
- `builtin_shapes_{train,val}_instance`: detectron2's `register_coco_instances`;
- `builtin_shapes_{train,val}_sem_seg`: `register_sem_seg`.

Generation is deterministic given the parameters (each image draws from its own seeded
generator) and idempotent: a completion marker records the parameters and a second call with
the same ones returns at once. Generate with
`python -m dinat_m2f.data.generate_builtin --root DIR`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..formats import encode_rle, id2rgb, mask_bbox_xywh, unique_segment_colors
from .catalog import guard_registered
from .layout import datasets_root
from .metadata import panoptic_metadata
from .panoptic_loader import register_coco_panoptic_annos_sem_seg
from .sem_seg_loader import register_sem_seg

FAMILY = "Built-in shapes"
DIRNAME = "builtin_shapes"
MARKER = ".complete.json"
GENERATOR_VERSION = 1
SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 0, "val": 1}
_FIRST_IMAGE_ID = {"train": 1, "val": 100001}

# Things first (contiguous ids 0..3, equal in the panoptic and instance registrations), then
# stuff (4..7). Dataset ids are not contiguous on purpose, as in COCO.
SHAPES_CATEGORIES: list[dict] = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 40, 40], "supercategory": "shape"},
    {"id": 2, "name": "square", "isthing": 1, "color": [235, 210, 40], "supercategory": "shape"},
    {"id": 3, "name": "triangle", "isthing": 1, "color": [190, 60, 220], "supercategory": "shape"},
    {"id": 4, "name": "star", "isthing": 1, "color": [245, 245, 245], "supercategory": "shape"},
    {"id": 11, "name": "sky", "isthing": 0, "color": [110, 160, 235], "supercategory": "bg"},
    {"id": 12, "name": "grass", "isthing": 0, "color": [60, 150, 50], "supercategory": "bg"},
    {"id": 13, "name": "water", "isthing": 0, "color": [30, 90, 160], "supercategory": "bg"},
    {"id": 14, "name": "wall", "isthing": 0, "color": [130, 85, 65], "supercategory": "bg"},
]
_THINGS = [c for c in SHAPES_CATEGORIES if c["isthing"]]
_STUFF = [c for c in SHAPES_CATEGORIES if not c["isthing"]]
_CONTIGUOUS = {c["id"]: i for i, c in enumerate(SHAPES_CATEGORIES)}


# --- rendering -----------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) noise in [-1, 1], bilinear upsampling of a (cells+1)^2 random grid."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))
    t = np.linspace(0.0, cells, size, endpoint=False)
    i = t.astype(int)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _texture(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 texture of a stuff class (0..255 range)."""
    s = size / 160.0
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if name == "sky":  # vertical gradient with soft clouds
        t = (y / size)[..., None]
        top, bottom = np.array([55, 105, 205]), np.array([150, 195, 245])
        img = top * (1 - t) + bottom * t
        clouds = np.clip(_smooth_noise(rng, size, 4), 0, None)[..., None]
        img = img + clouds * np.array([70, 55, 25])
    elif name == "grass":  # green with vertical blades
        n = rng.normal(0.0, 1.0, (size, size))
        blades = (n + np.roll(n, 1, axis=0) + np.roll(n, 2, axis=0)) / math.sqrt(3.0)
        img = np.array([55, 140, 45]) + blades[..., None] * np.array([10, 28, 8])
    elif name == "water":  # blue with horizontal ripples
        phase = rng.uniform(0, 2 * math.pi)
        wobble = 1.5 * np.sin(2 * math.pi * x / (25 * s) + phase)
        ripple = np.sin(2 * math.pi * y / (7 * s) + wobble)
        img = np.array([30, 85, 155]) + ripple[..., None] * np.array([10, 25, 30])
        img = img + rng.normal(0.0, 4.0, (size, size, 1))
    elif name == "wall":  # bricks with light mortar
        bh = max(3, round(8 * s))
        bw = 2 * bh
        row = (y // bh).astype(int)
        shifted = x + (row % 2) * (bw // 2)
        col = (shifted // bw).astype(int)
        jitter = rng.integers(-18, 19, size=(size // bh + 2, size // bw + 3, 1))
        img = np.array([130, 80, 60]) + jitter[row, col]
        mortar = (y % bh == 0) | (shifted % bw == 0)
        img = np.where(mortar[..., None], np.array([175, 170, 160]), img)
        img = img + rng.normal(0.0, 3.0, (size, size, 1))
    else:
        raise ValueError(f"unknown stuff class {name!r}")
    return np.broadcast_to(img, (size, size, 3)).astype(np.float32)


def _shape_mask(cls: str, cx: float, cy: float, r: float, angle: float, size: int) -> np.ndarray:
    """(size, size) bool mask of a filled shape of circumradius `r`."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if cls == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        if cls == "square":
            radii, n = [r * 0.9], 4
        elif cls == "triangle":
            radii, n = [r], 3
        elif cls == "star":
            radii, n = [r, r * 0.45], 10
        else:
            raise ValueError(f"unknown thing class {cls!r}")
        pts = []
        for k in range(n):
            rad = radii[k % len(radii)]
            a = angle + 2 * math.pi * k / n
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        draw.polygon(pts, fill=1)
    return np.asarray(canvas, dtype=bool)


def _stuff_regions(rng: np.random.Generator, size: int, k: int) -> np.ndarray:
    """(size, size) region index 0..k-1: bands split by wavy boundaries."""
    coord = np.arange(size, dtype=np.float32)
    bases = np.sort(rng.uniform(0.2, 0.8, size=k - 1)) * size
    for j in range(1, len(bases)):  # keep bands at least 15% apart
        bases[j] = max(bases[j], bases[j - 1] + 0.15 * size)
    region = np.zeros((size, size), dtype=np.int64)
    for b in bases:
        amp = rng.uniform(0.0, 0.08) * size
        freq = rng.integers(1, 3)
        phase = rng.uniform(0, 2 * math.pi)
        boundary = b + amp * np.sin(2 * math.pi * freq * coord / size + phase)  # along x
        region += (coord[:, None] >= boundary[None, :]).astype(np.int64)
    if rng.uniform() < 0.3:  # vertical bands
        region = region.T.copy()
    return region


def render_image(rng: np.random.Generator, size: int) -> dict[str, Any]:
    """One synthetic image and its annotation.

    Returns:
        dict with "image" (size, size, 3) uint8 RGB, "ids" (size, size) int64 segment ids
        (0 = void), "segments" list of (segment id, category dict, bool mask) in drawing
        order (stuff first), "semantic" (size, size) uint8 contiguous labels (255 = void).
    """
    k = int(rng.integers(2, 4))
    stuff = [_STUFF[i] for i in rng.choice(len(_STUFF), size=k, replace=False)]
    region = _stuff_regions(rng, size, k)
    void = np.zeros((size, size), dtype=bool)
    void[1:, :] |= region[1:, :] != region[:-1, :]
    void[:, 1:] |= region[:, 1:] != region[:, :-1]

    image = np.zeros((size, size, 3), dtype=np.float32)
    for j, cat in enumerate(stuff):
        m = region == j
        image[m] = _texture(cat["name"], rng, size)[m]

    # things, drawn in order; later ones occlude earlier ones
    inst = np.zeros((size, size), dtype=np.int64)  # 0 none, j+1 thing j
    things: list[tuple[dict, np.ndarray, int]] = []  # (category, full mask, full area)
    for _ in range(int(rng.integers(2, 6))):
        for _attempt in range(20):
            cat = _THINGS[int(rng.integers(len(_THINGS)))]
            r = rng.uniform(0.08, 0.2) * size
            cx, cy = rng.uniform(0.6 * r, size - 0.6 * r, size=2)
            mask = _shape_mask(cat["name"], cx, cy, r, rng.uniform(0, 2 * math.pi), size)
            area = int(mask.sum())
            if area < 0.004 * size * size:
                continue
            # every earlier thing keeps at least half of its area visible
            kept = [((inst == j + 1) & ~mask).sum() for j in range(len(things))]
            if all(k >= 0.5 * a for k, (_, _, a) in zip(kept, things)):
                break
        else:
            continue
        tint = np.array(cat["color"], dtype=np.float32) + rng.integers(-25, 26, size=3)
        light = rng.uniform(0, 2 * math.pi)  # direction of a soft shading gradient
        yy, xx = np.mgrid[0:size, 0:size]
        shade = ((xx - cx) * math.cos(light) + (yy - cy) * math.sin(light)) / r * 12.0
        color = tint[None, None, :] + shade[..., None] + rng.normal(0.0, 3.0, (size, size, 1))
        image[mask] = color[mask]
        inst[mask] = len(things) + 1
        things.append((cat, mask, area))

    image = np.clip(np.round(image), 0, 255).astype(np.uint8)

    # annotation: stuff segments, then visible thing segments
    taken: set[int] = set()
    ids = np.zeros((size, size), dtype=np.int64)
    semantic = np.full((size, size), 255, dtype=np.uint8)
    segments = []
    for j, cat in enumerate(stuff):
        m = (region == j) & ~void & (inst == 0)
        if m.any():
            sid, _ = unique_segment_colors(cat["color"], taken, rng)
            ids[m] = sid
            semantic[m] = _CONTIGUOUS[cat["id"]]
            segments.append((sid, cat, m))
    for j, (cat, _, _) in enumerate(things):
        m = inst == j + 1
        if m.any():
            sid, _ = unique_segment_colors(cat["color"], taken, rng)
            ids[m] = sid
            semantic[m] = _CONTIGUOUS[cat["id"]]
            segments.append((sid, cat, m))
    return {"image": image, "ids": ids, "segments": segments, "semantic": semantic}


# --- writing -------------------------------------------------------------------------------
def builtin_shapes_paths(root: str, split: str) -> dict[str, str]:
    """Paths of one split under the datasets root `root`."""
    base = os.path.join(root, DIRNAME)
    return {
        "base": base,
        "image_root": os.path.join(base, split),
        "panoptic_root": os.path.join(base, f"panoptic_{split}"),
        "sem_seg_root": os.path.join(base, f"panoptic_semseg_{split}"),
        "panoptic_json": os.path.join(base, "annotations", f"panoptic_{split}.json"),
        "instances_json": os.path.join(base, "annotations", f"instances_{split}.json"),
    }


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


# --- registration ----------------------------------------------------------------------------
def builtin_shapes_instance_metadata() -> dict:
    return {
        "thing_classes": [c["name"] for c in _THINGS],
        "thing_colors": [c["color"] for c in _THINGS],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(_THINGS)},
    }


def register_builtin_shapes(root: str, prefix: str = "builtin_shapes") -> list[str]:
    """Registers the three formats of both splits under `prefix` (files need not exist yet).

    Returns:
        The registered names.
    """
    from detectron2.data.datasets import register_coco_instances

    names = []
    pan_meta = panoptic_metadata(SHAPES_CATEGORIES)
    for split in SPLITS:
        p = builtin_shapes_paths(root, split)
        register_coco_panoptic_annos_sem_seg(
            f"{prefix}_{split}_panoptic",
            pan_meta,
            p["image_root"],
            p["panoptic_root"],
            p["panoptic_json"],
            p["sem_seg_root"],
            p["instances_json"],
            family=FAMILY,
        )
        inst = f"{prefix}_{split}_instance"
        if inst in DatasetCatalog.list():
            DatasetCatalog.remove(inst)
        if inst in MetadataCatalog.list():
            MetadataCatalog.remove(inst)
        register_coco_instances(
            inst, builtin_shapes_instance_metadata(), p["instances_json"], p["image_root"]
        )
        guard_registered(
            inst, FAMILY, [(p["instances_json"], "instances json"), (p["image_root"], "images")]
        )
        register_sem_seg(
            f"{prefix}_{split}_sem_seg",
            {"stuff_classes": pan_meta["stuff_classes"], "stuff_colors": pan_meta["stuff_colors"]},
            p["image_root"],
            p["sem_seg_root"],
            image_ext="jpg",
            gt_ext="png",
            family=FAMILY,
        )
        names += [
            f"{prefix}_{split}_panoptic_with_sem_seg",
            f"{prefix}_{split}_panoptic",
            inst,
            f"{prefix}_{split}_sem_seg",
        ]
    return names
