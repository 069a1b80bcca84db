"""Semantic segmentation metrics of saved predictions, with detectron2's SemSegEvaluator
definitions (command line: `python -m dinat_m2f.evaluation.semantic`).

Ground truth and predictions are single-channel PNG label maps with the same relative paths
(every PNG under the ground-truth folder, recursively, needs its prediction).

Definitions (detectron2's SemSegEvaluator): a (N+1) x (N+1) confusion matrix indexed
[pred, gt] where ignored ground truth goes to row/column N; with tp = its diagonal,
gt_k = pixels of class k in the ground truth and pred_k = pixels predicted k on non-ignored
ground truth, IoU_k = tp_k / (gt_k + pred_k - tp_k) and ACC_k = tp_k / gt_k are defined (else
NaN) for the classes present in the ground truth, and only those enter mIoU and mACC (a class
only predicted is left out, as in detectron2 0.7); fwIoU = sum_k IoU_k gt_k / sum gt;
pACC = sum tp / sum gt. Results are in percent.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

__all__ = ["confusion_matrix", "evaluate_folders", "read_label_png", "semantic_metrics"]


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_label: int | None = 255
) -> np.ndarray:
    """(N+1, N+1) int64 counts indexed [pred, gt]; ignored gt pixels are in column N.

    Args:
        gt: (H, W) integer labels in [0, num_classes) or ignore_label.
        pred: (H, W) integer labels in [0, num_classes).
        num_classes: N.
        ignore_label: ground-truth label that is not evaluated (None: none).
    """
    if gt.shape != pred.shape:
        raise ValueError(
            f"confusion_matrix: gt {tuple(gt.shape)} and pred {tuple(pred.shape)} "
            "must have the same shape"
        )
    if num_classes < 1:
        raise ValueError(f"confusion_matrix: num_classes must be >= 1, got {num_classes}")
    gt = gt.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    bad_pred = np.unique(pred[(pred < 0) | (pred >= num_classes)])
    if bad_pred.size:
        raise ValueError(
            f"confusion_matrix: pred labels must lie in [0, {num_classes}), got "
            f"{bad_pred[:10].tolist()}"
        )
    ignored = gt == ignore_label if ignore_label is not None else np.zeros(gt.shape, bool)
    bad_gt = np.unique(gt[~ignored & ((gt < 0) | (gt >= num_classes))])
    if bad_gt.size:
        raise ValueError(
            f"confusion_matrix: gt labels must lie in [0, {num_classes}) or be "
            f"ignore_label={ignore_label}, got {bad_gt[:10].tolist()}"
        )
    gt = np.where(ignored, num_classes, gt)
    size = num_classes + 1
    return np.bincount(pred * size + gt, minlength=size * size).reshape(size, size)


def semantic_metrics(
    conf: np.ndarray, class_names: Sequence[str] | None = None
) -> OrderedDict[str, float]:
    """mIoU, fwIoU, IoU-<name>, mACC, pACC, ACC-<name> (percent, NaN for classes absent from
    the ground truth) from a (N+1, N+1) [pred, gt] confusion matrix."""
    num_classes = conf.shape[0] - 1
    if conf.shape != (num_classes + 1, num_classes + 1) or num_classes < 1:
        raise ValueError(
            f"semantic_metrics: conf must be (N+1, N+1) with N >= 1, got {tuple(conf.shape)}"
        )
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"semantic_metrics: {len(names)} class names for {num_classes} classes")
    counts = conf[:-1, :-1].astype(np.float64)
    tp = np.diagonal(counts).copy()
    gt_pixels = counts.sum(axis=0)
    pred_pixels = counts.sum(axis=1)
    present = gt_pixels > 0
    iou = np.full(num_classes, np.nan)
    acc = np.full(num_classes, np.nan)
    iou[present] = tp[present] / (gt_pixels + pred_pixels - tp)[present]
    acc[present] = tp[present] / gt_pixels[present]
    total = gt_pixels.sum()

    out: OrderedDict[str, float] = OrderedDict()
    out["mIoU"] = 100 * float(iou[present].mean()) if present.any() else math.nan
    out["fwIoU"] = (
        100 * float((iou[present] * gt_pixels[present]).sum() / total) if total else math.nan
    )
    for name, value in zip(names, iou):
        out[f"IoU-{name}"] = 100 * float(value)
    out["mACC"] = 100 * float(acc[present].mean()) if present.any() else math.nan
    out["pACC"] = 100 * float(tp.sum() / total) if total else math.nan
    for name, value in zip(names, acc):
        out[f"ACC-{name}"] = 100 * float(value)
    return out


def read_label_png(path: str) -> np.ndarray:
    """(H, W) int64 labels of a single-channel (L, P, I) PNG."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label map not found: {path}")
    with Image.open(path) as image:
        labels = np.asarray(image).astype(np.int64)
        mode = image.mode
    if labels.ndim != 2:
        raise ValueError(f"{path}: a label map must be single-channel, got mode {mode}")
    return labels


def _label_files(folder: str) -> list[str]:
    files = []
    for root, _, names in os.walk(folder):
        files += [
            os.path.relpath(os.path.join(root, n), folder)
            for n in names
            if n.lower().endswith(".png")
        ]
    return sorted(files)


def evaluate_folders(
    gt_folder: str,
    pred_folder: str,
    num_classes: int,
    ignore_label: int | None = 255,
    class_names: Sequence[str] | None = None,
    progress: bool = False,
) -> OrderedDict[str, float]:
    """semantic_metrics() over every ground-truth PNG under `gt_folder` and the prediction with
    the same relative path under `pred_folder`."""
    for folder, role in ((gt_folder, "ground-truth"), (pred_folder, "prediction")):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{role} folder not found: {folder}")
    files = _label_files(gt_folder)
    if not files:
        raise ValueError(f"no PNG label maps under the ground-truth folder {gt_folder}")
    missing = [f for f in files if not os.path.isfile(os.path.join(pred_folder, f))]
    if missing:
        shown = ", ".join(os.path.join(pred_folder, f) for f in missing[:10])
        more = f" ... ({len(missing)} in all)" if len(missing) > 10 else ""
        raise FileNotFoundError(f"missing predictions: {shown}{more}")
    conf = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for name in tqdm(files, desc="semantic", unit="image", disable=not progress):
        gt = read_label_png(os.path.join(gt_folder, name))
        pred = read_label_png(os.path.join(pred_folder, name))
        try:
            conf += confusion_matrix(gt, pred, num_classes, ignore_label)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from error
    return semantic_metrics(conf, class_names)
