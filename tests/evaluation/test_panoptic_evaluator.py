"""COCOPanopticEvaluator end to end on a fake dataset registered in detectron2's catalogs:
model-style outputs (segments_info with contiguous ids, and the label-divisor format) in,
percent PQ out, files kept in output_dir."""

import json
import os
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from dinat_m2f.evaluation import COCOPanopticEvaluator
from tests.evaluation.panoptic_files import segment, write_dataset

# dataset ids: person 11 and car 12 (things), road 21 (stuff); contiguous 0, 1, 2.
CATEGORIES = [
    {"id": 11, "name": "person", "isthing": 1},
    {"id": 12, "name": "car", "isthing": 1},
    {"id": 21, "name": "road", "isthing": 0},
]
GT_A = np.array([[1, 1, 2, 2], [3, 3, 3, 3]])  # person 1, car 2, road 3
GT_B = np.array([[3, 3, 0, 0], [1, 1, 1, 1]])  # road 3, person 1, VOID 0


@pytest.fixture
def dataset(tmp_path):
    name = f"panoptic_eval_test_{uuid.uuid4().hex[:8]}"
    gt_segments = [segment(1, 11), segment(2, 12), segment(3, 21)]
    gt_json, gt_root = write_dataset(
        str(tmp_path),
        "panoptic_gt",
        [(1, GT_A, gt_segments), (2, GT_B, [segment(3, 21), segment(1, 11)])],
        CATEGORIES,
    )
    records = [{"file_name": f"/images/{n}.jpg", "image_id": i} for i, n in ((1, "a"), (2, "b"))]
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        panoptic_json=gt_json,
        panoptic_root=gt_root,
        thing_dataset_id_to_contiguous_id={11: 0, 12: 1},
        stuff_dataset_id_to_contiguous_id={11: 0, 12: 1, 21: 2},
        label_divisor=1000,
    )
    yield name, records
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _outputs():
    # Image a: segments_info with contiguous ids.
    #   person 5 = gt person (IoU 1); car 6 covers gt car (2 px) + 1 road px: IoU 2 / 3;
    #   road 7: 3 of the 4 road px: IoU 3 / 4.
    seg_a = torch.tensor([[5, 5, 6, 6], [7, 7, 7, 6]], dtype=torch.int32)
    info_a = [
        {"id": 5, "category_id": 0, "isthing": True},
        {"id": 6, "category_id": 1, "isthing": True},
        {"id": 7, "category_id": 2, "isthing": False, "score": torch.tensor(0.9)},
    ]
    # Image b: label-divisor format (contiguous category * 1000 + instance, -1 VOID).
    #   road 2000: 3 px, 1 on VOID: union 3 + 2 - 2 - 1 = 2 -> IoU 1;
    #   person 1: 3 of 4 px -> IoU 3 / 4; car 1005: 1 px on gt person -> FP.
    seg_b = torch.tensor([[2000, 2000, 2000, -1], [1, 1, 1, 1005]], dtype=torch.int32)
    return [{"panoptic_seg": (seg_a, info_a)}, {"panoptic_seg": (seg_b, None)}]


# person: tp 2, iou 1.75 -> PQ = SQ = 0.875, RQ 1; car: tp 1, fp 1, iou 2/3 -> PQ 4/9,
# SQ 2/3, RQ 2/3; road: tp 2, iou 1.75 -> PQ = SQ = 0.875, RQ 1.
EXPECTED = {
    "PQ": (0.875 + 4 / 9 + 0.875) / 3,
    "SQ": (0.875 + 2 / 3 + 0.875) / 3,
    "RQ": (1 + 2 / 3 + 1) / 3,
    "PQ_th": (0.875 + 4 / 9) / 2,
    "SQ_th": (0.875 + 2 / 3) / 2,
    "RQ_th": (1 + 2 / 3) / 2,
    "PQ_st": 0.875,
    "SQ_st": 0.875,
    "RQ_st": 1.0,
}


def test_evaluator_end_to_end(dataset, tmp_path):
    name, records = dataset
    output_dir = tmp_path / "out"
    evaluator = COCOPanopticEvaluator(name, output_dir=str(output_dir))
    evaluator.reset()
    outputs = _outputs()
    label_map = outputs[1]["panoptic_seg"][0].clone()
    evaluator.process(records[:1], outputs[:1])
    evaluator.process(records[1:], outputs[1:])
    assert torch.equal(outputs[1]["panoptic_seg"][0], label_map)  # outputs left untouched
    assert outputs[0]["panoptic_seg"][1][0]["isthing"] is True

    results = evaluator.evaluate()
    assert list(results) == ["panoptic_seg"]
    assert list(results["panoptic_seg"]) == list(EXPECTED)
    for key, value in EXPECTED.items():
        assert results["panoptic_seg"][key] == pytest.approx(100 * value, abs=1e-9), key

    with open(output_dir / "predictions.json") as f:
        saved = json.load(f)
    assert saved["categories"] == CATEGORIES
    by_image = {a["image_id"]: a for a in saved["annotations"]}
    assert by_image[1]["file_name"] == "a.png"
    assert sorted((s["id"], s["category_id"]) for s in by_image[1]["segments_info"]) == [
        (5, 11),
        (6, 12),
        (7, 21),
    ]
    assert sorted((s["id"], s["category_id"]) for s in by_image[2]["segments_info"]) == [
        (2, 11),
        (1006, 12),
        (2001, 21),
    ]
    assert sorted(os.listdir(output_dir / "predictions")) == ["a.png", "b.png"]
    with open(output_dir / "panoptic_results.json") as f:
        per_class = json.load(f)["per_class"]
    assert per_class["12"]["fp"] == 1 and per_class["12"]["tp"] == 1


def test_evaluator_without_output_dir_and_reset(dataset):
    name, records = dataset
    evaluator = COCOPanopticEvaluator(name)
    evaluator.reset()
    evaluator.process(records, _outputs())
    first = evaluator.evaluate()
    evaluator.reset()
    assert evaluator.evaluate() == {}  # nothing processed since the reset
    evaluator.process(records, _outputs())
    assert evaluator.evaluate() == first


def test_evaluator_errors(dataset):
    name, records = dataset
    evaluator = COCOPanopticEvaluator(name)
    evaluator.reset()
    bad = [
        {
            "panoptic_seg": (
                torch.ones(2, 4, dtype=torch.int32),
                [{"id": 1, "category_id": 7, "isthing": True}],
            )
        }
    ]
    with pytest.raises(ValueError, match="contiguous thing category_id 7"):
        evaluator.process(records[:1], bad)
    evaluator.process(records[:1], _outputs()[:1])  # image 2 never predicted
    with pytest.raises(ValueError, match="no prediction for ground-truth image ids 2"):
        evaluator.evaluate()
    MetadataCatalog.get(name + "_bare").set(thing_classes=["x"])
    try:
        with pytest.raises(ValueError, match="has no 'panoptic_json'"):
            COCOPanopticEvaluator(name + "_bare")
    finally:
        MetadataCatalog.remove(name + "_bare")
