"""Panoptic quality by brute force: pixel sets built with Python loops, every (gt, pred)
segment pair of a category compared directly. Written from panopticapi's definition, sharing
nothing with dinat_m2f.evaluation.panoptic_quality; slow, for tiny images only."""

from __future__ import annotations

import math
from typing import Any


def _pixel_sets(ids: Any) -> dict[int, set[tuple[int, int]]]:
    sets: dict[int, set[tuple[int, int]]] = {}
    for y, row in enumerate(ids.tolist()):
        for x, value in enumerate(row):
            sets.setdefault(value, set()).add((y, x))
    return sets


def image_stats(gt_ids, gt_segments, pred_ids, pred_segments) -> dict[int, list]:
    """Category id -> [tp, fp, fn, iou_sum] for one image."""
    gt_px = _pixel_sets(gt_ids)
    pred_px = _pixel_sets(pred_ids)
    void = gt_px.get(0, set())
    stats: dict[int, list] = {}

    def bump(cat: int, index: int, amount: float = 1) -> None:
        stats.setdefault(cat, [0, 0, 0, 0.0])[index] += amount

    matched_gt, matched_pred = set(), set()
    for g in gt_segments:
        if g["iscrowd"] == 1:
            continue
        g_set = gt_px.get(g["id"], set())
        for p in pred_segments:
            if p["category_id"] != g["category_id"]:
                continue
            p_set = pred_px[p["id"]]
            inter = len(g_set & p_set)
            if inter == 0:
                continue
            iou = inter / (len(p_set) + g["area"] - inter - len(p_set & void))
            if iou > 0.5:
                bump(g["category_id"], 0)
                bump(g["category_id"], 3, iou)
                matched_gt.add(g["id"])
                matched_pred.add(p["id"])
    crowd_region: dict[int, set] = {}
    for g in gt_segments:
        if g["iscrowd"] == 1:
            # panopticapi keeps only the last crowd segment of a category
            crowd_region[g["category_id"]] = gt_px.get(g["id"], set())
        elif g["id"] not in matched_gt:
            bump(g["category_id"], 2)
    for p in pred_segments:
        if p["id"] in matched_pred:
            continue
        p_set = pred_px[p["id"]]
        ignored = len(p_set & void) + len(p_set & crowd_region.get(p["category_id"], set()))
        if ignored / len(p_set) <= 0.5:
            bump(p["category_id"], 1)
    return stats


def dataset_pq(images, categories) -> dict[str, Any]:
    """images: (gt_ids, gt_segments, pred_ids, pred_segments); categories: [{id, isthing}].
    Returns {"All"|"Things"|"Stuff": (pq, sq, rq, n), "per_class": {id: (pq, sq, rq)}}."""
    total: dict[int, list] = {}
    for image in images:
        for cat, values in image_stats(*image).items():
            acc = total.setdefault(cat, [0, 0, 0, 0.0])
            for i in range(4):
                acc[i] += values[i]
    per_class = {}
    for c in categories:
        tp, fp, fn, iou = total.get(c["id"], [0, 0, 0, 0.0])
        if tp + fp + fn:
            d = tp + fp / 2 + fn / 2
            per_class[c["id"]] = (iou / d, iou / tp if tp else 0.0, tp / d)
    out: dict[str, Any] = {"per_class": per_class}
    for name, want in (("All", None), ("Things", 1), ("Stuff", 0)):
        rows = [
            v
            for c in categories
            for k, v in per_class.items()
            if k == c["id"] and (want is None or c["isthing"] == want)
        ]
        if rows:
            out[name] = tuple(sum(r[i] for r in rows) / len(rows) for i in range(3)) + (len(rows),)
        else:
            out[name] = (math.nan, math.nan, math.nan, 0)
    return out
