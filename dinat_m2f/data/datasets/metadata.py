"""Metadata of registered datasets: Mask2Former's panoptic metadata of a category list, and
colours for datasets whose official palette we do not ship."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["distinct_colors", "panoptic_metadata"]


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
