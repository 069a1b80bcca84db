"""Evaluation: panoptic quality with panopticapi's definition (no panopticapi needed), a
detectron2 panoptic evaluator built on it.

`COCOPanopticEvaluator` is imported on first use, so that the command-line tool
(`python -m dinat_m2f.evaluation.panoptic`) starts without torch / detectron2.
"""

from typing import Any

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
    "COCOPanopticEvaluator",
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


def __getattr__(name: str) -> Any:
    if name == "COCOPanopticEvaluator":
        from .panoptic_evaluator import COCOPanopticEvaluator

        return COCOPanopticEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
