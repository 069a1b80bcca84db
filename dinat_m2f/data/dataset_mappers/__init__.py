"""Dataset mappers (dataset dict -> model input) and the `build_dataset_mapper` selector.

| INPUT.DATASET_MAPPER_NAME | mapper | input dicts |
|---|---|---|
| "mask_former_semantic" | MaskFormerSemanticDatasetMapper | semantic (sem_seg_file_name) |
| "mask_former_instance" | MaskFormerInstanceDatasetMapper | COCO-format instances |
| "mask_former_panoptic" | MaskFormerPanopticDatasetMapper | panoptic (pan_seg_file_name) |
| "coco_instance_lsj" | COCOInstanceNewBaselineDatasetMapper | COCO-format instances |
| "coco_panoptic_lsj" | COCOPanopticNewBaselineDatasetMapper | panoptic |
| "detectron2_instance" | DetectionDatasetMapper (R-CNN detectors) | COCO-format instances |

Output contract: see `common`.
"""

from __future__ import annotations

from collections.abc import Callable

from detectron2.config import CfgNode

from .coco_instance_new_baseline_dataset_mapper import COCOInstanceNewBaselineDatasetMapper
from .coco_panoptic_new_baseline_dataset_mapper import COCOPanopticNewBaselineDatasetMapper
from .detection_dataset_mapper import DetectionDatasetMapper
from .mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper
from .mask_former_panoptic_dataset_mapper import MaskFormerPanopticDatasetMapper
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper

__all__ = [
    "DATASET_MAPPERS",
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
    "DetectionDatasetMapper",
    "MaskFormerInstanceDatasetMapper",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerSemanticDatasetMapper",
    "build_dataset_mapper",
]

DATASET_MAPPERS: dict[str, type] = {
    "mask_former_semantic": MaskFormerSemanticDatasetMapper,
    "mask_former_instance": MaskFormerInstanceDatasetMapper,
    "mask_former_panoptic": MaskFormerPanopticDatasetMapper,
    "coco_instance_lsj": COCOInstanceNewBaselineDatasetMapper,
    "coco_panoptic_lsj": COCOPanopticNewBaselineDatasetMapper,
    "detectron2_instance": DetectionDatasetMapper,
}


def build_dataset_mapper(cfg: CfgNode, is_train: bool = True) -> Callable[[dict], dict]:
    """The mapper named by INPUT.DATASET_MAPPER_NAME, built from `cfg`.

    Raises:
        ValueError: the name is not one of `DATASET_MAPPERS`.
    """
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in DATASET_MAPPERS:
        raise ValueError(
            f"INPUT.DATASET_MAPPER_NAME={name!r} is not a known dataset mapper; valid names: "
            + ", ".join(sorted(DATASET_MAPPERS))
        )
    return DATASET_MAPPERS[name](cfg, is_train)
