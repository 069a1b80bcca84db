"""Panoptic quality: hand-made images with answers worked out in comments, a brute-force oracle
on random images, file handling and the errors on bad input."""

import json
import math
import os

import numpy as np
import pytest

from dinat_m2f.evaluation import (
    Category,
    pq_compute,
    pq_image_counts,
    read_panoptic_png,
    summarize,
)
from dinat_m2f.panoptic_ids import id2rgb, rgb2id
from tests.evaluation import pq_brute_force as brute
from tests.evaluation.panoptic_files import segment, write_dataset, write_ids_png

# Things: person (1), car (2); stuff: road (3), sky (4), never present in any test image (5).
CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "car", "isthing": 1},
    {"id": 3, "name": "road", "isthing": 0},
    {"id": 4, "name": "sky", "isthing": 0},
    {"id": 5, "name": "water", "isthing": 0},
]
CATS = {c["id"]: Category(c["id"], c["name"], bool(c["isthing"])) for c in CATEGORIES}


def pred(seg_id, category_id):
    return {"id": seg_id, "category_id": category_id}


def evaluate(gt, gt_segments, prediction, pred_segments):
    gt, prediction = np.array(gt), np.array(prediction)
    return summarize(pq_image_counts(gt, gt_segments, prediction, pred_segments, CATS, "img"), CATS)


def test_perfect_prediction_is_one_and_absent_categories_are_excluded():
    # person 7, car 8, road 9; sky and water appear nowhere: left out of every average.
    gt = [[7, 7, 9, 9], [8, 8, 9, 9]]
    result = evaluate(
        gt,
        [segment(7, 1), segment(8, 2), segment(9, 3)],
        [[1, 1, 3, 3], [2, 2, 3, 3]],
        [pred(1, 1), pred(2, 2), pred(3, 3)],
    )
    for metrics in (result.all, result.things, result.stuff):
        assert (metrics.pq, metrics.sq, metrics.rq) == (1.0, 1.0, 1.0)
    assert (result.all.n, result.things.n, result.stuff.n) == (3, 2, 1)
    assert result.per_class[1].counts.tp == 1 and result.per_class[3].counts.iou == 1.0
    assert not result.per_class[4].valid and math.isnan(result.per_class[5].pq)


def test_iou_exactly_half_is_not_a_match():
    # gt person: 4 pixels; prediction: 2 of them, the other 2 VOID in the prediction.
    # IoU = 2 / (2 + 4 - 2) = 0.5, not > 0.5: 1 FN (gt) and 1 FP (prediction, 0 px on VOID).
    # PQ = 0 / (0 + 0.5 + 0.5) = 0, RQ = 0, SQ = 0 (no tp).
    result = evaluate([[1, 1, 1, 1]], [segment(1, 1)], [[5, 5, 0, 0]], [pred(5, 1)])
    counts = result.per_class[1].counts
    assert (counts.tp, counts.fp, counts.fn) == (0, 1, 1)
    assert (result.all.pq, result.all.sq, result.all.rq, result.all.n) == (0.0, 0.0, 0.0, 1)


def test_iou_just_above_half_is_a_match():
    # gt person fills a 10 x 10 image; the prediction covers its first 51 pixels (rest VOID).
    # IoU = 51 / (51 + 100 - 51) = 0.51 > 0.5: tp = 1, PQ = SQ = 0.51, RQ = 1.
    prediction = np.zeros((10, 10), np.int64)
    prediction.flat[:51] = 3
    result = evaluate(np.ones((10, 10), np.int64), [segment(1, 1)], prediction, [pred(3, 1)])
    assert result.all.pq == pytest.approx(0.51, abs=1e-12)
    assert result.all.sq == pytest.approx(0.51, abs=1e-12) and result.all.rq == 1.0


def test_void_pixels_leave_the_union():
    # gt: 2 VOID pixels then road (4 px); predicted road covers all 6.
    # union = 6 + 4 - 4 - 2 (VOID) = 4 -> IoU = 4 / 4 = 1.
    result = evaluate([[0, 0, 1, 1, 1, 1]], [segment(1, 3)], [[2] * 6], [pred(2, 3)])
    assert result.per_class[3].counts.iou == 1.0 and result.all.pq == 1.0


def test_false_positive_mostly_on_void_is_not_counted():
    # gt: 5 VOID px then road (5 px).  Predicted car: 4 px, 3 on VOID (0.75 > 0.5): ignored.
    # Predicted road: 4 px inside gt road: IoU = 4 / (4 + 5 - 4) = 0.8 -> tp.
    # Only road counts: PQ = 0.8; the car class has no tp/fp/fn, so Things has n = 0 (NaN).
    gt = [[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]]
    result = evaluate(
        gt, [segment(1, 3)], [[2, 2, 2, 0, 0, 1, 1, 1, 1, 2]], [pred(1, 3), pred(2, 2)]
    )
    assert result.all.pq == pytest.approx(0.8) and result.all.n == 1
    assert result.things.n == 0 and math.isnan(result.things.pq)
    assert result.stuff.pq == pytest.approx(0.8)


def test_false_positive_half_on_void_is_counted():
    # As above but the car has only 2 of its 4 px on VOID: 0.5 is not > 0.5 -> FP.
    # Road: 3 px, IoU = 3 / (3 + 5 - 3) = 0.6. PQ: road 0.6, car 0 / (0.5) = 0 -> All 0.3.
    gt = [[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]]
    result = evaluate(
        gt, [segment(1, 3)], [[2, 2, 0, 0, 0, 1, 1, 1, 2, 2]], [pred(1, 3), pred(2, 2)]
    )
    assert result.per_class[2].counts.fp == 1 and result.per_class[2].pq == 0.0
    assert result.all.pq == pytest.approx(0.3) and result.all.n == 2
    assert result.things.pq == 0.0 and result.stuff.pq == pytest.approx(0.6)


def test_crowd_regions():
    # gt: a person crowd 5 (6 px over both rows), person 6 (4 px), VOID elsewhere.
    # Predictions: person 1 lies on 4 px of the person crowd (4 / 4 > 0.5 on the crowd of its
    # category: ignored, not a FP); person 2 is exactly segment 6 (tp, IoU 1); car 3 lies on 2
    # px of the *person* crowd, which does not excuse a car: FP. The crowd is never a FN.
    # person: tp 1 -> PQ 1; car: fp 1 -> PQ 0; All = Things = 0.5 (n = 2), Stuff n = 0.
    gt = [[5, 5, 5, 5, 6, 6, 6, 6, 0, 0], [5, 5, 0, 0, 0, 0, 0, 0, 0, 0]]
    prediction = [[1, 1, 1, 1, 2, 2, 2, 2, 0, 0], [3, 3, 0, 0, 0, 0, 0, 0, 0, 0]]
    result = evaluate(
        gt,
        [segment(5, 1, iscrowd=1), segment(6, 1)],
        prediction,
        [pred(1, 1), pred(2, 1), pred(3, 2)],
    )
    person, car = result.per_class[1].counts, result.per_class[2].counts
    assert (person.tp, person.fp, person.fn) == (1, 0, 0)
    assert (car.tp, car.fp, car.fn) == (0, 1, 0)
    assert result.things.pq == 0.5 and result.things.n == 2 and result.stuff.n == 0


def test_crowd_pixels_stay_in_the_union():
    # gt person 6 (4 px) next to a person crowd 5 (4 px); one prediction covers both (8 px).
    # panopticapi removes only VOID from the union: IoU = 4 / (8 + 4 - 4 - 0) = 0.5 -> no
    # match. The unmatched prediction has 4 / 8 = 0.5 on VOID + crowd (not > 0.5) -> FP; the
    # gt segment is a FN. PQ = 0.
    result = evaluate(
        [[6, 6, 6, 6, 5, 5, 5, 5]],
        [segment(6, 1), segment(5, 1, iscrowd=1)],
        [[1] * 8],
        [pred(1, 1)],
    )
    counts = result.per_class[1].counts
    assert (counts.tp, counts.fp, counts.fn) == (0, 1, 1) and result.all.pq == 0.0


def test_only_the_last_crowd_segment_of_a_category_excuses_predictions():
    # Two person crowds: 5 (listed first) and 6 (listed last). A person prediction on crowd 5
    # only is a FP (panopticapi keeps crowd 6); one on crowd 6 is ignored.
    gt = [[5, 5, 6, 6]]
    segments = [segment(5, 1, iscrowd=1), segment(6, 1, iscrowd=1)]
    on_first = evaluate(gt, segments, [[1, 1, 0, 0]], [pred(1, 1)])
    on_last = evaluate(gt, segments, [[0, 0, 1, 1]], [pred(1, 1)])
    assert on_first.per_class[1].counts.fp == 1
    assert not on_last.per_class[1].valid


def test_unlisted_gt_ids_are_not_void():
    # gt id 9 is not in segments_info: no match with it, and a prediction on it is a FP
    # (panopticapi treats only id 0 as VOID).
    result = evaluate([[9, 9, 9, 9]], [], [[1, 1, 1, 1]], [pred(1, 2)])
    assert result.per_class[2].counts.fp == 1 and result.all.pq == 0.0


def test_things_and_stuff_are_averaged_separately():
    # person: perfect (PQ 1). road 10 px predicted as 8 px inside it + 2 px sky:
    # road IoU = 8 / (8 + 10 - 8) = 0.8 -> PQ 0.8; sky prediction (2 px, none on VOID) -> FP,
    # sky PQ 0. Things = 1 (n 1), Stuff = (0.8 + 0) / 2 = 0.4 (n 2), All = 1.8 / 3 = 0.6.
    # SQ: person 1, road 0.8, sky 0 -> All SQ = 0.6; RQ: 1, 1, 0 -> All RQ = 2/3.
    gt = [[1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]]
    prediction = [[1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3]]
    result = evaluate(
        gt, [segment(1, 1), segment(2, 3)], prediction, [pred(1, 1), pred(2, 3), pred(3, 4)]
    )
    assert (result.things.pq, result.things.n) == (1.0, 1)
    assert result.stuff.pq == pytest.approx(0.4) and result.stuff.n == 2
    assert result.all.pq == pytest.approx(0.6) and result.all.sq == pytest.approx(0.6)
    assert result.all.rq == pytest.approx(2 / 3) and result.all.n == 3


def test_gt_area_comes_from_the_json():
    # As panopticapi: the gt segment's json area (here 8, the PNG has 4 px) enters the union:
    # IoU = 4 / (4 + 8 - 4) = 0.5 -> no match.
    result = evaluate([[1, 1, 1, 1]], [segment(1, 3, area=8)], [[2, 2, 2, 2]], [pred(2, 3)])
    assert result.per_class[3].counts.tp == 0


def test_rgb_id_round_trip(tmp_path):
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 256**3 - 1, 123456]], np.int64)
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb[1, 2].tolist() == [255, 255, 255]
    assert rgb[0, 3].tolist() == [0, 1, 0]
    np.testing.assert_array_equal(rgb2id(rgb), ids)
    write_ids_png(str(tmp_path / "a.png"), ids)
    np.testing.assert_array_equal(read_panoptic_png(tmp_path / "a.png"), ids)
    with pytest.raises(ValueError, match="ids must lie in"):
        id2rgb(np.array([[256**3]]))


# ---------------------------------------------------------------- random images vs brute force


def _random_image(rng, height=14, width=17):
    """A gt with rectangles of random categories (some crowd, one unlisted id, VOID left
    over) and a prediction made from a shifted gt plus new rectangles, with large ids."""
    gt = np.zeros((height, width), np.int64)
    gt_cat = {}
    for seg_id in range(1, rng.integers(3, 8)):
        y, x = rng.integers(0, height - 2), rng.integers(0, width - 2)
        gt[y : y + rng.integers(2, 9), x : x + rng.integers(2, 9)] = seg_id
        gt_cat[seg_id] = int(rng.integers(1, 5))
    if rng.random() < 0.5:
        gt[rng.integers(0, height), :] = 77  # an id not in segments_info
    gt_segments = [
        segment(i, c, iscrowd=int(c <= 2 and rng.random() < 0.25))
        for i, c in gt_cat.items()
        if (gt == i).any()
    ]
    shifted = np.roll(gt, (int(rng.integers(-1, 2)), int(rng.integers(-2, 3))), axis=(0, 1))
    for new in range(100, 100 + rng.integers(0, 4)):
        y, x = rng.integers(0, height - 2), rng.integers(0, width - 2)
        shifted[y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = new
    prediction = np.zeros_like(shifted)
    pred_segments = []
    for value in np.unique(shifted).tolist():
        if value == 0:
            continue
        new_id = int(rng.integers(1, 256**3))
        while new_id in {s["id"] for s in pred_segments}:
            new_id = int(rng.integers(1, 256**3))
        prediction[shifted == value] = new_id
        same = value in gt_cat and rng.random() < 0.85
        pred_segments.append(pred(new_id, gt_cat[value] if same else int(rng.integers(1, 5))))
    return gt, gt_segments, prediction, pred_segments


def test_random_images_agree_with_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    images = [_random_image(rng) for _ in range(40)]
    gt_json, gt_folder = write_dataset(
        str(tmp_path), "gt", [(i, im[0], im[1]) for i, im in enumerate(images)], CATEGORIES
    )
    pred_json, pred_folder = write_dataset(
        str(tmp_path), "pred", [(i, im[2], im[3]) for i, im in enumerate(images)]
    )
    with open(gt_json) as f:  # the oracle reads the same json areas
        gt_segments = [a["segments_info"] for a in json.load(f)["annotations"]]
    expected = brute.dataset_pq(
        [(im[0], gt_segments[i], im[2], im[3]) for i, im in enumerate(images)], CATEGORIES
    )

    result = pq_compute(gt_json, pred_json, gt_folder, pred_folder)
    for name, metrics in result.groups().items():
        pq, sq, rq, n = expected[name]
        assert metrics.n == n > 0
        assert abs(metrics.pq - pq) < 1e-9 and abs(metrics.sq - sq) < 1e-9
        assert abs(metrics.rq - rq) < 1e-9
    valid = {k: (c.pq, c.sq, c.rq) for k, c in result.per_class.items() if c.valid}
    assert valid.keys() == expected["per_class"].keys()
    for k, values in valid.items():
        np.testing.assert_allclose(values, expected["per_class"][k], rtol=0, atol=1e-9)
    # the random cases do exercise matches, misses, FPs and crowds
    totals = [
        sum(getattr(c.counts, f) for c in result.per_class.values()) for f in ("tp", "fp", "fn")
    ]
    assert min(totals) > 10
    assert any(s["iscrowd"] for segments in gt_segments for s in segments)

    in_two = pq_compute(gt_json, pred_json, gt_folder, pred_folder, workers=2)
    assert in_two == result


# ------------------------------------------------------------------------------ bad input


@pytest.fixture
def one_image(tmp_path):
    """A valid one-image pair of files; tests then break one thing."""
    gt_json, gt_folder = write_dataset(
        str(tmp_path),
        "gt",
        [("im1", np.array([[1, 1, 2, 2]]), [segment(1, 1), segment(2, 3)])],
        CATEGORIES,
    )
    pred_json, pred_folder = write_dataset(
        str(tmp_path), "pred", [("im1", np.array([[4, 4, 6, 6]]), [pred(4, 1), pred(6, 3)])]
    )
    return gt_json, pred_json, gt_folder, pred_folder  # pq_compute's argument order


def _edit_pred(pred_json, edit):
    with open(pred_json) as f:
        data = json.load(f)
    edit(data["annotations"][0])
    with open(pred_json, "w") as f:
        json.dump(data, f)


def test_valid_fixture_is_perfect(one_image):
    assert pq_compute(*one_image).all.pq == 1.0


def test_segment_in_png_missing_from_json(one_image):
    _edit_pred(one_image[1], lambda a: a["segments_info"].pop())
    with pytest.raises(ValueError, match=r"image 'im1': segment id 6 is in the predicted PNG"):
        pq_compute(*one_image)


def test_segment_in_json_missing_from_png(one_image):
    _edit_pred(one_image[1], lambda a: a["segments_info"].append(pred(9, 1)))
    with pytest.raises(
        ValueError,
        match=r"image 'im1': predicted segment ids \[9\] .* not in "
        r"the PNG",
    ):
        pq_compute(*one_image)


def test_unknown_category(one_image):
    _edit_pred(one_image[1], lambda a: a["segments_info"][0].update(category_id=42))
    with pytest.raises(
        ValueError, match="image 'im1': predicted segment 4 has unknown category_id 42"
    ):
        pq_compute(*one_image)


def test_missing_png_is_named(one_image):
    missing = os.path.join(one_image[3], "im1.png")
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match=missing):
        pq_compute(*one_image)


def test_missing_json_and_folder_are_named(one_image, tmp_path):
    gt_json, pred_json, gt_folder, pred_folder = one_image
    with pytest.raises(FileNotFoundError, match="nope.json"):
        pq_compute(gt_json, str(tmp_path / "nope.json"), gt_folder, pred_folder)
    with pytest.raises(FileNotFoundError, match="no_folder"):
        pq_compute(gt_json, pred_json, gt_folder, str(tmp_path / "no_folder"))


def test_image_id_sets_must_match(one_image):
    _edit_pred(one_image[1], lambda a: a.update(image_id="im2"))
    with pytest.raises(ValueError, match="no prediction for ground-truth image ids 'im1'"):
        pq_compute(*one_image)
    with open(one_image[1]) as f:
        data = json.load(f)
    data["annotations"].append(dict(data["annotations"][0], image_id="im1"))
    with pytest.raises(ValueError, match="absent from the ground truth: 'im2'"):
        pq_compute(one_image[0], data, one_image[2], one_image[3])


def test_size_mismatch_and_bad_workers(one_image):
    write_ids_png(os.path.join(one_image[3], "im1.png"), np.array([[4, 4, 6, 6, 6]]))
    with pytest.raises(
        ValueError,
        match=r"image 'im1': ground truth \(1, 4\) and prediction "
        r"\(1, 5\)",
    ):
        pq_compute(*one_image)
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got 0"):
        pq_compute(*one_image, workers=0)


def test_ids_out_of_the_png_range():
    with pytest.raises(ValueError, match=r"image 'img': predicted ids must lie in \[0, 16777216\)"):
        evaluate([[1]], [segment(1, 1)], [[-1]], [])
