"""Segment ids of COCO panoptic PNGs: the one conversion between ids and RGB colours.

A COCO panoptic PNG is an RGB image whose pixel (R, G, B) holds the segment id
`R + 256 * G + 256**2 * B`; 0 is "void" (no segment). The datasets, the dataset mappers, the
built-in dataset's generator, the preparation scripts under `datasets/` and the evaluation all
use these two functions (panopticapi's names). The module needs numpy only, so the evaluation's
command lines start without torch or detectron2.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NUM_SEGMENT_IDS", "id2rgb", "rgb2id"]

# ids come from 3 bytes
NUM_SEGMENT_IDS = 256**3


def rgb2id(color: np.ndarray) -> np.ndarray:
    """Segment ids of RGB colours.

    Args:
        color: (..., 3) RGB array, e.g. (H, W, 3) uint8 of a PNG or (3,) for one colour.

    Returns:
        (...) int64 ids, `R + 256 * G + 256**2 * B`.
    """
    color = np.asarray(color)
    if color.ndim == 0 or color.shape[-1] != 3:
        raise ValueError(f"rgb2id: color must be an (..., 3) RGB array, got shape {color.shape}")
    c = color.astype(np.int64)
    return c[..., 0] + 256 * c[..., 1] + 256 * 256 * c[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Inverse of `rgb2id`: integer ids (...) in [0, 256**3) -> (..., 3) uint8 RGB."""
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"id2rgb: ids must be an integer array, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= NUM_SEGMENT_IDS):
        raise ValueError(
            f"id2rgb: ids must lie in [0, {NUM_SEGMENT_IDS}), got [{ids.min()}, {ids.max()}]"
        )
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // (256 * 256)], axis=-1).astype(np.uint8)
