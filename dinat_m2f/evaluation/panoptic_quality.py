"""Panoptic quality (PQ, SQ, RQ) on COCO panoptic files, with panopticapi's definition.

Inputs are in COCO panoptic format: a json with `annotations` (per image: `image_id`,
`file_name` of a PNG, `segments_info` = [{id, category_id, iscrowd, area, ...}]) and, for the
ground truth, `categories` = [{id, name, isthing}]; PNGs whose pixels hold the segment id
encoded as id = R + 256 * G + 256**2 * B, 0 meaning VOID.

Per image, exactly as panopticapi's `pq_compute`:

* a ground-truth pixel with id 0 is VOID; a ground-truth id that `segments_info` does not list
  takes part in no match (it is *not* treated as VOID: predicted pixels on it still count);
* a predicted segment's area is its pixel count; a ground-truth segment's area is its json
  `area` (its pixel count when the json has none);
* a non-crowd ground-truth segment g and a predicted segment p of the same category match when
  IoU = |g & p| / (area(p) + area(g) - |g & p| - |VOID & p|) > 0.5 (crowd pixels are not
  removed from this union, only VOID pixels are); a match adds 1 to tp and IoU to the
  category's IoU sum;
* an unmatched non-crowd ground-truth segment is a false negative; crowd segments are never
  matched nor counted;
* an unmatched predicted segment is a false positive unless more than half of its area lies on
  VOID plus the crowd region of its category (when a category has several crowd segments,
  panopticapi keeps only the last one listed, and so does this module).

Per category PQ = iou_sum / (tp + fp/2 + fn/2), SQ = iou_sum / tp (0 when tp = 0),
RQ = tp / (tp + fp/2 + fn/2); a category with tp + fp + fn = 0 is left out of the averages over
All / Things / Stuff (its per-class values are NaN here, where panopticapi writes 0.0) and an
average over no category is NaN (panopticapi divides by zero).

Deviations, all stricter than panopticapi: ground-truth and prediction image-id sets must be
equal (panopticapi ignores extra predictions), and duplicated image or segment ids, unknown
ground-truth categories and ground-truth / prediction size mismatches are errors.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..panoptic_ids import NUM_SEGMENT_IDS, rgb2id

VOID = 0
# Segment ids come from 3 bytes, so they are < 2**24 and a (gt, pred) pair fits in an int64.
OFFSET = NUM_SEGMENT_IDS

JsonSource = str | os.PathLike | Mapping[str, Any]


@dataclass
class PQCounts:
    """Matching counts of one category: true / false positives, false negatives and the sum of
    the IoUs of its true positives."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0

    def add(self, other: PQCounts) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou += other.iou


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    isthing: bool


@dataclass(frozen=True)
class PQMetrics:
    """PQ / SQ / RQ (fractions, not percent) averaged over `n` categories."""

    pq: float
    sq: float
    rq: float
    n: int


@dataclass(frozen=True)
class ClassPQ:
    """One category's counts and metrics (fractions); metrics are NaN when tp + fp + fn = 0."""

    category: Category
    counts: PQCounts
    pq: float
    sq: float
    rq: float

    @property
    def valid(self) -> bool:
        return self.counts.tp + self.counts.fp + self.counts.fn > 0


@dataclass(frozen=True)
class PQResult:
    all: PQMetrics
    things: PQMetrics
    stuff: PQMetrics
    per_class: dict[int, ClassPQ]

    def groups(self) -> dict[str, PQMetrics]:
        return {"All": self.all, "Things": self.things, "Stuff": self.stuff}

    def to_dict(self) -> dict[str, Any]:
        """panopticapi's layout ({"All": {"pq", "sq", "rq", "n"}, "Things", "Stuff",
        "per_class": {category id: {...}}}) plus names and counts per class; see to_json() for
        a json.dump-able copy."""
        out: dict[str, Any] = {
            name: {"pq": m.pq, "sq": m.sq, "rq": m.rq, "n": m.n}
            for name, m in self.groups().items()
        }
        out["per_class"] = {
            cat_id: {
                "name": c.category.name,
                "isthing": c.category.isthing,
                "pq": c.pq,
                "sq": c.sq,
                "rq": c.rq,
                "tp": c.counts.tp,
                "fp": c.counts.fp,
                "fn": c.counts.fn,
                "iou": c.counts.iou,
            }
            for cat_id, c in self.per_class.items()
        }
        return out

    def to_json(self) -> dict[str, Any]:
        """to_dict() with string keys and NaN written as None, for json.dump."""
        return _json_ready(self.to_dict())


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """The (H, W) int64 segment ids of an RGB-encoded panoptic PNG."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"panoptic PNG not found: {path}")
    with Image.open(path) as image:
        array = np.asarray(image)
        mode = image.mode
    if array.ndim != 3 or array.shape[2] < 3:
        raise ValueError(
            f"{path}: a panoptic PNG must be RGB-encoded, got mode {mode} with "
            f"shape {tuple(array.shape)}"
        )
    return rgb2id(array[..., :3])  # RGBA PNGs: the alpha channel is not part of the id


def _segment_table(
    segments: Sequence[Mapping[str, Any]], image_id: Any, role: str
) -> dict[int, Mapping[str, Any]]:
    table: dict[int, Mapping[str, Any]] = {}
    for segment in segments:
        if "id" not in segment or "category_id" not in segment:
            raise ValueError(
                f"image {image_id!r}: a {role} segment lacks 'id' or 'category_id': {dict(segment)}"
            )
        seg_id = int(segment["id"])
        if seg_id in table:
            raise ValueError(
                f"image {image_id!r}: {role} segment id {seg_id} is listed twice in segments_info"
            )
        table[seg_id] = segment
    return table


def _lookup(sorted_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each value in `sorted_ids` and whether it is there at all."""
    if sorted_ids.size == 0:
        return np.zeros(values.shape, np.int64), np.zeros(values.shape, bool)
    index = np.minimum(np.searchsorted(sorted_ids, values), sorted_ids.size - 1)
    return index, sorted_ids[index] == values


def pq_image_counts(
    gt_ids: np.ndarray,
    gt_segments: Sequence[Mapping[str, Any]],
    pred_ids: np.ndarray,
    pred_segments: Sequence[Mapping[str, Any]],
    categories: Mapping[int, Category],
    image_id: Any = None,
) -> dict[int, PQCounts]:
    """PQ counts of one image, per category id (only categories that occur).

    Args:
        gt_ids: (H, W) integer ground-truth segment ids, 0 = VOID.
        gt_segments: ground-truth `segments_info` (id, category_id, iscrowd, optional area).
        pred_ids: (H, W) integer predicted segment ids, 0 = VOID unless listed.
        pred_segments: predicted `segments_info` (id, category_id).
        categories: category id -> Category.
        image_id: named in error messages.
    """
    if gt_ids.shape != pred_ids.shape or gt_ids.ndim != 2:
        raise ValueError(
            f"image {image_id!r}: ground truth {tuple(gt_ids.shape)} and "
            f"prediction {tuple(pred_ids.shape)} must be 2-D maps of the same size"
        )
    for ids, role in ((gt_ids, "ground-truth"), (pred_ids, "predicted")):
        if ids.size and (ids.min() < 0 or ids.max() >= OFFSET):
            raise ValueError(
                f"image {image_id!r}: {role} ids must lie in [0, {OFFSET}), got "
                f"[{ids.min()}, {ids.max()}]"
            )
    gt_table = _segment_table(gt_segments, image_id, "ground-truth")
    pred_table = _segment_table(pred_segments, image_id, "predicted")
    for seg_id, seg in gt_table.items():
        if int(seg["category_id"]) not in categories:
            raise ValueError(
                f"image {image_id!r}: ground-truth segment {seg_id} has unknown "
                f"category_id {seg['category_id']}"
            )

    # Every (gt id, pred id) pair present and its pixel count: one pass over the pixels.
    pairs = gt_ids.astype(np.int64).ravel() * OFFSET + pred_ids.astype(np.int64).ravel()
    labels, inter = np.unique(pairs, return_counts=True)
    pair_gt, pair_pred = labels // OFFSET, labels % OFFSET
    present_pred, inverse = np.unique(pair_pred, return_inverse=True)
    present_area = np.bincount(inverse, weights=inter).astype(np.int64)

    present = set(present_pred.tolist())
    for seg_id in present_pred.tolist():
        if seg_id not in pred_table and seg_id != VOID:
            raise ValueError(
                f"image {image_id!r}: segment id {seg_id} is in the predicted PNG "
                "but not in its segments_info"
            )
    absent = sorted(set(pred_table) - present)
    if absent:
        raise ValueError(
            f"image {image_id!r}: predicted segment ids {absent} are in "
            "segments_info but not in the PNG"
        )
    for seg_id, seg in pred_table.items():
        if int(seg["category_id"]) not in categories:
            raise ValueError(
                f"image {image_id!r}: predicted segment {seg_id} has unknown "
                f"category_id {seg['category_id']}"
            )

    # Segment tables as arrays sorted by id.
    gt_seg_ids = np.array(sorted(gt_table), dtype=np.int64)
    gt_cat = np.array([int(gt_table[i]["category_id"]) for i in gt_seg_ids.tolist()], np.int64)
    gt_crowd = np.array(
        [int(gt_table[i].get("iscrowd", 0)) == 1 for i in gt_seg_ids.tolist()], dtype=bool
    )
    gt_present, gt_inverse = np.unique(pair_gt, return_inverse=True)
    gt_pixels = dict(zip(gt_present.tolist(), np.bincount(gt_inverse, weights=inter).tolist()))
    gt_area = np.array(
        [int(gt_table[i].get("area", gt_pixels.get(i, 0))) for i in gt_seg_ids.tolist()], np.int64
    )
    pred_seg_ids = np.array(sorted(pred_table), dtype=np.int64)
    pred_cat = np.array(
        [int(pred_table[i]["category_id"]) for i in pred_seg_ids.tolist()], np.int64
    )
    area_index, _ = _lookup(present_pred, pred_seg_ids)
    pred_area = present_area[area_index] if pred_seg_ids.size else np.zeros(0, np.int64)

    gi, gt_known = _lookup(gt_seg_ids, pair_gt)
    pi, pred_known = _lookup(pred_seg_ids, pair_pred)
    on_void = pred_known & (pair_gt == VOID)
    pred_void = np.bincount(pi[on_void], weights=inter[on_void], minlength=pred_seg_ids.size)

    counts: dict[int, PQCounts] = {}

    def of(category_id: int) -> PQCounts:
        return counts.setdefault(category_id, PQCounts())

    # Matches: a pair of a known non-crowd gt segment and a known prediction of its category.
    candidate = gt_known & pred_known
    candidate[candidate] &= ~gt_crowd[gi[candidate]]
    candidate[candidate] &= gt_cat[gi[candidate]] == pred_cat[pi[candidate]]
    c_gi, c_pi, c_inter = gi[candidate], pi[candidate], inter[candidate].astype(np.float64)
    iou = c_inter / (pred_area[c_pi] + gt_area[c_gi] - c_inter - pred_void[c_pi])
    matched = iou > 0.5
    gt_matched = np.zeros(gt_seg_ids.size, bool)
    pred_matched = np.zeros(pred_seg_ids.size, bool)
    gt_matched[c_gi[matched]] = True
    pred_matched[c_pi[matched]] = True
    for g, value in zip(c_gi[matched].tolist(), iou[matched].tolist()):
        stats = of(int(gt_cat[g]))
        stats.tp += 1
        stats.iou += value

    # False negatives: unmatched non-crowd gt segments.
    for g in np.flatnonzero(~gt_matched & ~gt_crowd).tolist():
        of(int(gt_cat[g])).fn += 1

    # The crowd region of a category: the last crowd segment listed (as panopticapi).
    crowd_of: dict[int, int] = {}
    for segment in gt_segments:
        if int(segment.get("iscrowd", 0)) == 1:
            crowd_of[int(segment["category_id"])] = int(segment["id"])
    pred_crowd_id = np.array([crowd_of.get(c, -1) for c in pred_cat.tolist()], np.int64)
    on_crowd = pred_known.copy()
    on_crowd[on_crowd] &= pair_gt[on_crowd] == pred_crowd_id[pi[on_crowd]]
    pred_on_crowd = np.bincount(pi[on_crowd], weights=inter[on_crowd], minlength=pred_seg_ids.size)

    # False positives: unmatched predictions not mostly on VOID or on their category's crowd.
    ignored = (pred_void + pred_on_crowd) / np.maximum(pred_area, 1) > 0.5
    for p in np.flatnonzero(~pred_matched & ~ignored).tolist():
        of(int(pred_cat[p])).fp += 1
    return counts


def summarize(counts: Mapping[int, PQCounts], categories: Mapping[int, Category]) -> PQResult:
    """Per-class metrics and their averages over All, Things and Stuff from summed counts."""
    per_class: dict[int, ClassPQ] = {}
    for cat_id, category in categories.items():
        c = counts.get(cat_id, PQCounts())
        denominator = c.tp + 0.5 * c.fp + 0.5 * c.fn
        if denominator == 0:
            per_class[cat_id] = ClassPQ(category, c, math.nan, math.nan, math.nan)
        else:
            sq = c.iou / c.tp if c.tp else 0.0
            per_class[cat_id] = ClassPQ(category, c, c.iou / denominator, sq, c.tp / denominator)

    def average(isthing: bool | None) -> PQMetrics:
        chosen = [
            c
            for c in per_class.values()
            if c.valid and (isthing is None or c.category.isthing == isthing)
        ]
        if not chosen:
            return PQMetrics(math.nan, math.nan, math.nan, 0)
        n = len(chosen)
        return PQMetrics(
            sum(c.pq for c in chosen) / n,
            sum(c.sq for c in chosen) / n,
            sum(c.rq for c in chosen) / n,
            n,
        )

    return PQResult(average(None), average(True), average(False), per_class)


def _load_json(source: JsonSource, role: str) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{role} json not found: {source}")
    with open(source) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{role} json {source} is not valid json: {error}") from error
    if not isinstance(data, Mapping):
        raise ValueError(f"{role} json {source} must hold an object, got {type(data).__name__}")
    return data


def _require(data: Mapping[str, Any], key: str, role: str, source: JsonSource) -> Any:
    if key not in data:
        where = source if not isinstance(source, Mapping) else "(in memory)"
        raise ValueError(f"{role} json {where} has no '{key}' entry")
    return data[key]


def load_categories(gt_json: Mapping[str, Any]) -> dict[int, Category]:
    """Category id -> Category from a ground-truth json's `categories`, in its order."""
    categories: dict[int, Category] = {}
    for entry in gt_json.get("categories", []):
        cat_id = int(entry["id"])
        if cat_id in categories:
            raise ValueError(f"ground-truth categories list id {cat_id} twice")
        categories[cat_id] = Category(
            cat_id, str(entry.get("name", cat_id)), int(entry.get("isthing", 0)) == 1
        )
    if not categories:
        raise ValueError("ground-truth json lists no categories")
    return categories


def _by_image_id(annotations: Iterable[Mapping[str, Any]], role: str) -> dict[Any, Mapping]:
    by_id: dict[Any, Mapping] = {}
    for annotation in annotations:
        image_id = annotation["image_id"]
        if image_id in by_id:
            raise ValueError(f"{role} annotations list image id {image_id!r} twice")
        by_id[image_id] = annotation
    return by_id


def _describe(ids: Iterable[Any], limit: int = 10) -> str:
    ids = sorted(ids, key=str)
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _image_counts(task: tuple) -> dict[int, PQCounts]:
    gt_ann, pred_ann, gt_folder, pred_folder, categories = task
    image_id = gt_ann["image_id"]
    gt_ids = read_panoptic_png(os.path.join(gt_folder, gt_ann["file_name"]))
    pred_ids = read_panoptic_png(os.path.join(pred_folder, pred_ann["file_name"]))
    return pq_image_counts(
        gt_ids,
        gt_ann.get("segments_info", []),
        pred_ids,
        pred_ann.get("segments_info", []),
        categories,
        image_id,
    )


def pq_compute(
    gt_json: JsonSource,
    pred_json: JsonSource,
    gt_folder: str | os.PathLike,
    pred_folder: str | os.PathLike,
    workers: int = 1,
    progress: bool = False,
) -> PQResult:
    """PQ / SQ / RQ of predictions against ground truth, both in COCO panoptic format.

    Args:
        gt_json: path of the ground-truth json, or its loaded content (needs `annotations` and
            `categories`).
        pred_json: path of the prediction json, or its loaded content (needs `annotations`).
        gt_folder: folder of the ground-truth PNGs named by `file_name`.
        pred_folder: folder of the predicted PNGs named by `file_name`.
        workers: processes reading and matching images (1: in this process).
        progress: show a tqdm progress bar.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"pq_compute: workers must be an integer >= 1, got {workers!r}")
    gt_data = _load_json(gt_json, "ground-truth")
    pred_data = _load_json(pred_json, "prediction")
    for folder, role in ((gt_folder, "ground-truth"), (pred_folder, "prediction")):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{role} PNG folder not found: {folder}")
    categories = load_categories(gt_data)
    gt_anns = _by_image_id(
        _require(gt_data, "annotations", "ground-truth", gt_json), "ground-truth"
    )
    pred_anns = _by_image_id(
        _require(pred_data, "annotations", "prediction", pred_json), "prediction"
    )
    missing, extra = set(gt_anns) - set(pred_anns), set(pred_anns) - set(gt_anns)
    if missing:
        raise ValueError(f"no prediction for ground-truth image ids {_describe(missing)}")
    if extra:
        raise ValueError(
            f"predictions for image ids absent from the ground truth: {_describe(extra)}"
        )

    tasks = [
        (gt_anns[i], pred_anns[i], os.fspath(gt_folder), os.fspath(pred_folder), categories)
        for i in gt_anns
    ]
    total: dict[int, PQCounts] = {}
    for counts in _run(tasks, workers, progress):
        for cat_id, c in counts.items():
            total.setdefault(cat_id, PQCounts()).add(c)
    return summarize(total, categories)


def _run(tasks: list[tuple], workers: int, progress: bool) -> Iterator[dict[int, PQCounts]]:
    bar = tqdm(total=len(tasks), desc="panoptic quality", unit="image", disable=not progress)
    try:
        if workers == 1 or len(tasks) < 2:
            for task in tasks:
                yield _image_counts(task)
                bar.update()
        else:
            chunk = max(1, min(16, len(tasks) // (4 * workers)))
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for counts in pool.imap(_image_counts, tasks, chunksize=chunk):
                    yield counts
                    bar.update()
    finally:
        bar.close()
