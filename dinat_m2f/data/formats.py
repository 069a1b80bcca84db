"""Helpers for the on-disk annotation formats (COCO panoptic PNGs, RLE, semantic PNGs).

Shared by the dataset loaders, the dataset mappers, the built-in synthetic dataset and the
preparation scripts under `datasets/`, so every producer and consumer of a format agrees on
one definition.

COCO panoptic PNG: an RGB image of segment ids (the conversion is
`dinat_m2f.panoptic_ids.rgb2id` / `id2rgb`); 0 is "void". The json lists, per image,
`segments_info` entries `{"id", "category_id", "area", "bbox": [x, y, w, h], "iscrowd"}`
where `w = x_max - x_min + 1` (inclusive pixel extent), as panopticapi and pycocotools
compute it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..panoptic_ids import rgb2id

__all__ = [
    "mask_bbox_xywh",
    "segment_stats",
    "panoptic_to_semantic",
    "encode_rle",
    "unique_segment_colors",
]


def mask_bbox_xywh(mask: np.ndarray) -> list[int]:
    """COCO box `[x, y, w, h]` (inclusive pixel extent) of a non-empty (H, W) bool mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask_bbox_xywh: the mask is empty")
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def segment_stats(ids: np.ndarray, segment_ids: Iterable[int]) -> dict[int, dict]:
    """Area and COCO box of each segment of a panoptic id map.

    Args:
        ids: (H, W) integer segment ids.
        segment_ids: the ids to measure.

    Returns:
        {segment id: {"area": int, "bbox": [x, y, w, h]}}; a segment absent from `ids` gets
        area 0 and bbox [0, 0, 0, 0].
    """
    out = {}
    for sid in segment_ids:
        mask = ids == sid
        area = int(mask.sum())
        out[int(sid)] = {"area": area, "bbox": mask_bbox_xywh(mask) if area else [0, 0, 0, 0]}
    return out


def panoptic_to_semantic(
    ids: np.ndarray,
    segments_info: Sequence[Mapping],
    category_to_label: Mapping[int, int],
    ignore_label: int = 255,
    dtype: type = np.uint8,
) -> np.ndarray:
    """Semantic label map of a panoptic id map.

    Every pixel of a listed segment gets `category_to_label[segment["category_id"]]` (crowd
    segments included: they still have a class); void pixels and pixels of unlisted ids get
    `ignore_label`.

    Args:
        ids: (H, W) integer segment ids (`panoptic_ids.rgb2id` of the PNG).
        segments_info: the image's `segments_info` (needs "id" and "category_id").
        category_to_label: dataset category id -> semantic label.
        ignore_label: label of void pixels.
        dtype: output dtype (uint8 for <= 255 labels).

    Returns:
        (H, W) array of `dtype`.
    """
    out = np.full(ids.shape, ignore_label, dtype=dtype)
    for seg in segments_info:
        cat = int(seg["category_id"])
        if cat not in category_to_label:
            raise KeyError(
                f"panoptic_to_semantic: category_id {cat} of segment {seg['id']} is not one of "
                f"the known categories {sorted(category_to_label)}"
            )
        out[ids == int(seg["id"])] = category_to_label[cat]
    return out


def encode_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE (`counts` as a str, json-ready) of an (H, W) bool mask."""
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def unique_segment_colors(
    category_color: Sequence[int], taken: set[int], rng: np.random.Generator, max_tries: int = 1000
) -> tuple[int, list[int]]:
    """A new segment id near a category's color (as COCO's panopticapi does for its PNGs).

    The first segment of a category uses the category color itself; later ones jitter it by up
    to +-30 per channel until the id is unused. The id is added to `taken`.

    Returns:
        (segment id, [R, G, B]).
    """
    base = np.asarray(category_color, dtype=np.int64)
    for attempt in range(max_tries):
        if attempt == 0:
            color = base
        else:
            color = np.clip(base + rng.integers(-30, 31, size=3), 0, 255)
        sid = int(rgb2id(color))
        if sid != 0 and sid not in taken:
            taken.add(sid)
            return sid, [int(c) for c in color]
    raise RuntimeError(f"no free segment id near color {list(category_color)} after {max_tries}")
