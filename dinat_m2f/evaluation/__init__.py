"""Evaluation: panoptic quality with panopticapi's definition (no panopticapi needed), a
detectron2 panoptic evaluator built on it, and semantic metrics of saved label maps.

Library modules: `panoptic_quality` (PQ), `panoptic_tables` (PQ as tables),
`panoptic_evaluator` (detectron2 evaluator), `semantic_metrics` (mIoU & co.),
`evaluator_factory` (the evaluators of a dataset). Command lines, and nothing else:
`python -m dinat_m2f.evaluation.panoptic` and `python -m dinat_m2f.evaluation.semantic`.

`COCOPanopticEvaluator` is imported on first use, so that the command lines start without
torch / detectron2.
"""

from typing import Any

from .panoptic_quality import (
    Category,
    ClassPQ,
    PQCounts,
    PQMetrics,
    PQResult,
    load_categories,
    pq_compute,
    pq_image_counts,
    read_panoptic_png,
    summarize,
)
from .semantic_metrics import confusion_matrix, evaluate_folders, semantic_metrics

__all__ = [
    "COCOPanopticEvaluator",
    "Category",
    "ClassPQ",
    "PQCounts",
    "PQMetrics",
    "PQResult",
    "confusion_matrix",
    "evaluate_folders",
    "load_categories",
    "pq_compute",
    "pq_image_counts",
    "read_panoptic_png",
    "semantic_metrics",
    "summarize",
]


def __getattr__(name: str) -> Any:
    if name == "COCOPanopticEvaluator":
        from .panoptic_evaluator import COCOPanopticEvaluator

        return COCOPanopticEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
