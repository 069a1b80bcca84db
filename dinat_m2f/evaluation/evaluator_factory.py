"""Which detectron2 evaluators a dataset gets, from its metadata's `evaluator_type` and the
model's enabled outputs (MODEL.MASK_FORMER.TEST.*_ON)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    COCOEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)
from detectron2.utils.file_io import PathManager
from PIL import Image

from .cityscapes_evaluators import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator

PANOPTIC_TYPES = (
    "coco_panoptic_seg",
    "ade20k_panoptic_seg",
    "cityscapes_panoptic_seg",
    "mapillary_vistas_panoptic_seg",
)
SUPPORTED_TYPES = ("sem_seg", "coco", "cityscapes_sem_seg", "cityscapes_instance") + PANOPTIC_TYPES


def load_label_png(filename: str, dtype=int) -> np.ndarray:
    """A label PNG as an array (detectron2's default loader breaks under numpy 2)."""
    with PathManager.open(filename, "rb") as f:
        return np.asarray(Image.open(f), dtype=dtype)


def fast_coco_eval_available() -> bool:
    """detectron2's C++ COCOeval lives in its compiled extension, which may be absent."""
    return importlib.util.find_spec("detectron2._C") is not None


def build_evaluator(cfg, dataset_name: str, output_folder: str | None = None) -> DatasetEvaluator:
    """Evaluators for `dataset_name`: mIoU for semantic datasets, COCO AP for instance ones,
    PQ (+ AP and mIoU when the model outputs them) for panoptic ones, Cityscapes' own for
    Cityscapes. Raises ValueError for a dataset without a supported evaluator_type."""
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    evaluator_type = getattr(metadata, "evaluator_type", None)
    test = cfg.MODEL.MASK_FORMER.TEST
    panoptic = evaluator_type in PANOPTIC_TYPES
    evaluators: list[DatasetEvaluator] = []

    def semantic():
        if evaluator_type.startswith("cityscapes"):
            evaluators.append(CityscapesSemSegEvaluator(dataset_name))
        else:
            evaluators.append(
                SemSegEvaluator(
                    dataset_name,
                    distributed=True,
                    output_dir=output_folder,
                    sem_seg_loading_fn=load_label_png,
                )
            )

    def instance():
        if evaluator_type.startswith("cityscapes"):
            evaluators.append(CityscapesInstanceEvaluator(dataset_name))
        else:
            evaluators.append(
                COCOEvaluator(
                    dataset_name, output_dir=output_folder, use_fast_impl=fast_coco_eval_available()
                )
            )

    if evaluator_type in ("sem_seg", "cityscapes_sem_seg"):
        semantic()
    elif evaluator_type in ("coco", "cityscapes_instance"):
        instance()
    elif panoptic:
        if test.PANOPTIC_ON:
            from .panoptic_evaluator import COCOPanopticEvaluator

            evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
        if test.INSTANCE_ON:
            instance()
        if test.SEMANTIC_ON:
            semantic()
    else:
        raise ValueError(
            f"dataset {dataset_name!r} has evaluator_type={evaluator_type!r}; supported: "
            f"{SUPPORTED_TYPES} (set it in the dataset's metadata)"
        )
    if not evaluators:
        raise ValueError(
            f"no evaluator for {dataset_name!r} ({evaluator_type}): MODEL.MASK_FORMER.TEST."
            "{PANOPTIC_ON, INSTANCE_ON, SEMANTIC_ON} are all off"
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
