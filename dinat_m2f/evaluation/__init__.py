"""Evaluation: panoptic quality with panopticapi's definition (no panopticapi needed)."""

from .panoptic_quality import (
    Category,
    ClassPQ,
    PQCounts,
    PQMetrics,
    PQResult,
    id_to_rgb,
    load_categories,
    pq_compute,
    pq_image_counts,
    read_panoptic_png,
    rgb_to_id,
    summarize,
)

__all__ = [
    "Category",
    "ClassPQ",
    "PQCounts",
    "PQMetrics",
    "PQResult",
    "id_to_rgb",
    "load_categories",
    "pq_compute",
    "pq_image_counts",
    "read_panoptic_png",
    "rgb_to_id",
    "summarize",
]

