"""Cityscapes evaluation with images skipped as broken (DATALOADER.SKIP_BROKEN_SAMPLES):
detectron2's evaluators stop the process (cityscapesscripts finds no prediction for the
skipped image's ground truth); ours give exactly what cityscapesscripts computes on a ground
truth folder holding only the evaluated images. Tiny data in Cityscapes' file layout."""

import shutil

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Instances
from PIL import Image

from dinat_m2f.data.broken_samples import BrokenSample, _record_skipped, _reset_skipped
from dinat_m2f.evaluation.cityscapes_evaluators import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
)

pytest.importorskip("cityscapesscripts")
FRAMES = ["aachen_000000_000019", "aachen_000001_000019", "aachen_000002_000019"]
THINGS = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
H, W = 64, 96  # instances of 16 x 20 pixels: cityscapesscripts ignores those under 100


def write_ground_truth(root, frames, seed=0):
    """labelIds and instanceIds PNGs: road / sidewalk / building background with cars and
    persons as rectangles, and each frame's image path."""
    rng = np.random.default_rng(seed)
    (root / "aachen").mkdir(parents=True)
    truth = {}
    for frame in frames:
        labels = np.full((H, W), 7, np.uint8)  # road
        labels[: H // 3] = 11  # building
        labels[H // 3 : H // 2, : W // 2] = 8  # sidewalk
        instances = labels.astype(np.uint16)
        for k, label in enumerate([26, 26, 24]):  # car, car, person
            y, x = rng.integers(0, H - 16), rng.integers(0, W - 20)
            labels[y : y + 16, x : x + 20] = label
            instances[y : y + 16, x : x + 20] = label * 1000 + k
        Image.fromarray(labels).save(root / "aachen" / f"{frame}_gtFine_labelIds.png")
        Image.fromarray(instances).save(root / "aachen" / f"{frame}_gtFine_instanceIds.png")
        truth[frame] = (labels, instances)
    return truth


def image_input(frame):
    return {"file_name": f"leftImg8bit/val/aachen/{frame}_leftImg8bit.png"}


def semantic_output(labels, rng):
    from cityscapesscripts.helpers.labels import id2label

    train_ids = np.vectorize(lambda i: id2label[int(i)].trainId)(labels)
    train_ids[rng.random(labels.shape) < 0.1] = 0  # some pixels wrong: road
    logits = torch.zeros(19, H, W)
    logits.scatter_(0, torch.from_numpy(train_ids.astype(np.int64)).clamp(0, 18)[None], 1.0)
    return {"sem_seg": logits}


def instance_output(instances_png, rng):
    out = Instances((H, W))
    ids = [i for i in np.unique(instances_png) if i >= 1000]
    masks = torch.from_numpy(np.stack([instances_png == i for i in ids]))
    masks[0] = torch.roll(masks[0], 2, dims=1)  # one mask off by two pixels
    out.pred_masks = masks
    out.pred_classes = torch.tensor(
        [THINGS.index({24: "person", 26: "car"}[i // 1000]) for i in ids]
    )
    out.scores = torch.from_numpy(rng.uniform(0.5, 1.0, len(ids))).float()
    return {"instances": out}


def run(evaluator, truth, frames, make_output):
    rng = np.random.default_rng(1)
    evaluator.reset()
    for frame in frames:
        evaluator.process([image_input(frame)], [make_output(truth[frame], rng)])
    return evaluator.evaluate()


def expected_mean_iou(truth, frames):
    """Cityscapes' class IoU by hand: the mean over classes with any pixel in the ground truth
    or the prediction (the predictions are re-drawn with the same generator as in run())."""
    from cityscapesscripts.helpers.labels import id2label, trainId2label

    rng = np.random.default_rng(1)
    confusion = np.zeros((19, 19), np.int64)
    for frame in frames:
        labels = truth[frame][0]
        predicted = semantic_output(labels, rng)["sem_seg"].argmax(0).numpy()
        gt = np.vectorize(lambda i: id2label[int(i)].trainId)(labels)
        np.add.at(confusion, (gt.ravel(), predicted.ravel()), 1)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = [c for c in range(19) if union[c] > 0 and not trainId2label[c].ignoreInEval]
    return 100.0 * float(np.mean([tp[c] / union[c] for c in present]))


@pytest.mark.parametrize(
    "evaluator, make_output",
    [
        (CityscapesSemSegEvaluator, lambda t, rng: semantic_output(t[0], rng)),
        (CityscapesInstanceEvaluator, lambda t, rng: instance_output(t[1], rng)),
    ],
    ids=["semantic", "instance"],
)
def test_skipped_images_are_left_out_of_cityscapes_evaluation(
    tmp_path, monkeypatch, evaluator, make_output
):
    monkeypatch.chdir(tmp_path)  # cityscapesscripts writes result files into the working dir
    truth = write_ground_truth(tmp_path / "all", FRAMES)
    evaluated = FRAMES[:2]
    shutil.copytree(tmp_path / "all", tmp_path / "evaluated")
    for path in (tmp_path / "evaluated" / "aachen").glob(f"{FRAMES[2]}_*"):
        path.unlink()
    name = f"cityscapes_skip_test_{evaluator.__name__}"
    for dataset, gt_dir in ((name, "all"), (name + "_evaluated", "evaluated")):
        MetadataCatalog.get(dataset).set(gt_dir=str(tmp_path / gt_dir), thing_classes=THINGS)

    _reset_skipped(name)
    # without the skipped image left out, cityscapesscripts finds no prediction and exits
    with pytest.raises(SystemExit):
        run(evaluator(name), truth, evaluated, make_output)
    _record_skipped(
        name, BrokenSample(name, 2, "broken", None, image_input(FRAMES[2])["file_name"])
    )
    try:
        got = run(evaluator(name), truth, evaluated, make_output)
    finally:
        _reset_skipped(name)
    # the reference: cityscapesscripts on a ground truth of the evaluated images only
    expected = run(evaluator(name + "_evaluated"), truth, evaluated, make_output)
    assert got == expected and len(got) == 1
    if evaluator is CityscapesSemSegEvaluator:
        assert got["sem_seg"]["IoU"] == pytest.approx(expected_mean_iou(truth, evaluated), abs=1e-9)
        assert 50 < got["sem_seg"]["IoU"] < 100
    else:
        assert 0 < got["segm"]["AP"] < 100  # one mask is off by two pixels
