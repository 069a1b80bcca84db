"""Semantic metrics of saved label maps: against per-class masks counted directly, against
detectron2's own SemSegEvaluator, by hand, and the command line."""

import json
import math
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from dinat_m2f.evaluation import confusion_matrix, evaluate_folders, semantic_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLASSES = 5
IGNORE = 255


def _random_pairs(seed=0, count=6):
    """(name, gt, pred) with ignored pixels; class 4 is only ever predicted, never in gt."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(count):
        gt = rng.integers(0, 4, size=(9, 13))
        gt[rng.random(gt.shape) < 0.15] = IGNORE
        pred = np.where(
            rng.random(gt.shape) < 0.6,
            np.where(gt == IGNORE, 0, gt),
            rng.integers(0, NUM_CLASSES, size=gt.shape),
        )
        pairs.append((f"sub/img{i}.png" if i % 2 else f"img{i}.png", gt, pred))
    return pairs


def _write(root, pairs):
    for name, gt, pred in pairs:
        for kind, labels in (("gt", gt), ("pred", pred)):
            path = os.path.join(root, kind, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(labels.astype(np.uint8), mode="L").save(path)
    return os.path.join(root, "gt"), os.path.join(root, "pred")


def _direct(pairs):
    """Per-class masks counted one class at a time, ignoring gt == IGNORE."""
    tp, gt_count, pred_count = (np.zeros(NUM_CLASSES) for _ in range(3))
    for _, gt, pred in pairs:
        valid = gt != IGNORE
        for k in range(NUM_CLASSES):
            tp[k] += np.sum((gt == k) & (pred == k))
            gt_count[k] += np.sum(gt == k)
            pred_count[k] += np.sum((pred == k) & valid)
    present = [k for k in range(NUM_CLASSES) if gt_count[k] > 0]
    iou = {k: tp[k] / (gt_count[k] + pred_count[k] - tp[k]) for k in present}
    acc = {k: tp[k] / gt_count[k] for k in present}
    return {
        "mIoU": 100 * sum(iou.values()) / len(present),
        "fwIoU": 100 * sum(iou[k] * gt_count[k] for k in present) / gt_count.sum(),
        "mACC": 100 * sum(acc.values()) / len(present),
        "pACC": 100 * tp.sum() / gt_count.sum(),
        "iou": iou,
    }


def test_folder_metrics_match_a_direct_count(tmp_path):
    pairs = _random_pairs()
    gt_folder, pred_folder = _write(str(tmp_path), pairs)
    results = evaluate_folders(gt_folder, pred_folder, NUM_CLASSES, IGNORE)
    expected = _direct(pairs)
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert results[key] == pytest.approx(expected[key], abs=1e-9), key
    for k in range(4):
        assert results[f"IoU-{k}"] == pytest.approx(100 * expected["iou"][k], abs=1e-9)
    # class 4: predicted but absent from the ground truth -> NaN, outside the means
    assert math.isnan(results["IoU-4"]) and math.isnan(results["ACC-4"])


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_matches_detectron2_sem_seg_evaluator(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import SemSegEvaluator

    pairs = _random_pairs(seed=1)
    gt_folder, pred_folder = _write(str(tmp_path), pairs)
    names = [f"c{k}" for k in range(NUM_CLASSES)]
    records = [
        {"file_name": name, "sem_seg_file_name": os.path.join(gt_folder, name)}
        for name, _, _ in pairs
    ]
    dataset = f"sem_seg_test_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(dataset, lambda: records)
    MetadataCatalog.get(dataset).set(stuff_classes=names, ignore_label=IGNORE)
    try:
        # detectron2's default loader asks numpy 2 for a copy-free array and fails
        evaluator = SemSegEvaluator(
            dataset,
            distributed=False,
            sem_seg_loading_fn=lambda path, dtype: np.asarray(Image.open(path), dtype=dtype),
        )
        evaluator.reset()
        for record, (_, _, pred) in zip(records, pairs):
            scores = torch.nn.functional.one_hot(torch.from_numpy(pred), NUM_CLASSES)
            evaluator.process([record], [{"sem_seg": scores.permute(2, 0, 1).float()}])
        reference = evaluator.evaluate()["sem_seg"]
    finally:
        DatasetCatalog.remove(dataset)
        MetadataCatalog.remove(dataset)
    ours = evaluate_folders(gt_folder, pred_folder, NUM_CLASSES, IGNORE, names)
    assert set(ours) <= set(reference)
    for key, value in ours.items():
        assert value == pytest.approx(reference[key], abs=1e-9, nan_ok=True), key


def test_by_hand():
    # gt    [0 0 1 255]   class 0: tp 1, gt 2, pred 1 (the 255 pixel's prediction is ignored)
    # pred  [0 1 1 0  ]   class 1: tp 1, gt 1, pred 2
    # IoU0 = 1/2, IoU1 = 1/2; ACC0 = 1/2, ACC1 = 1; pACC = 2/3; fwIoU = (2 * 1/2 + 1/2) / 3.
    conf = confusion_matrix(np.array([[0, 0, 1, 255]]), np.array([[0, 1, 1, 0]]), 2, 255)
    assert conf.tolist() == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]  # [pred, gt], gt 255 -> column 2
    r = semantic_metrics(conf, ["a", "b"])
    assert r["IoU-a"] == r["IoU-b"] == pytest.approx(50.0) and r["mIoU"] == pytest.approx(50.0)
    assert r["mACC"] == pytest.approx(75.0) and r["pACC"] == pytest.approx(200 / 3)
    assert r["fwIoU"] == pytest.approx(50.0)


def test_label_errors():
    with pytest.raises(ValueError, match=r"pred labels must lie in \[0, 3\), got \[3, 7\]"):
        confusion_matrix(np.zeros((2, 2)), np.array([[0, 3], [7, 1]]), 3)
    with pytest.raises(ValueError, match=r"ignore_label=255, got \[9\]"):
        confusion_matrix(np.array([[9, 255]]), np.zeros((1, 2)), 3)
    with pytest.raises(ValueError, match=r"gt \(1, 2\) and pred \(2, 1\)"):
        confusion_matrix(np.zeros((1, 2)), np.zeros((2, 1)), 3)
    with pytest.raises(ValueError, match="3 class names for 2 classes"):
        semantic_metrics(np.zeros((3, 3), np.int64), ["a", "b", "c"])


def _cli(gt_folder, pred_folder, num_classes, *args):
    folders = ["--gt-folder", gt_folder, "--pred-folder", pred_folder]
    return subprocess.run(
        [sys.executable, "-m", "dinat_m2f.evaluation.semantic", *folders, "--num-classes"]
        + [str(num_classes), *args, "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli(tmp_path):
    pairs = _random_pairs(seed=2)
    gt_folder, pred_folder = _write(str(tmp_path), pairs)
    names_file = tmp_path / "names.txt"
    names_file.write_text("".join(f"name{k}\n" for k in range(NUM_CLASSES)))
    output = tmp_path / "sem.json"
    done = _cli(
        gt_folder, pred_folder, NUM_CLASSES, "--class-names", str(names_file), "--output", output
    )
    assert done.returncode == 0, done.stderr
    expected = _direct(pairs)
    assert f"{expected['mIoU']:.3f}" in done.stdout and "name3" in done.stdout
    with open(output) as f:
        saved = json.load(f)
    assert saved["pACC"] == pytest.approx(expected["pACC"]) and saved["IoU-name4"] is None

    os.remove(os.path.join(pred_folder, "sub", "img1.png"))
    done = _cli(gt_folder, pred_folder, NUM_CLASSES)
    assert done.returncode == 1
    assert f"missing predictions: {os.path.join(pred_folder, 'sub', 'img1.png')}" in done.stderr

    done = _cli(gt_folder, pred_folder, 3, "--class-names", str(names_file))
    assert done.returncode == 1 and "has 5 names, --num-classes is 3" in done.stderr
