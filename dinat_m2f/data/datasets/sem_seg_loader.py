"""Loader and registration of semantic segmentation datasets: label files named like the
images, in a folder of their own."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .catalog import replace_metadata, replace_registration
from .errors import DatasetFormatError, check_paths, run_checked

__all__ = ["load_sem_seg_checked", "register_sem_seg"]


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
    return run_checked(
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
