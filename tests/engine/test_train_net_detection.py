"""train_net.py with the R-CNN detectors: a short run of the built-in Mask R-CNN DiNAT-Mini
config (and of a cascade) on a small built-in dataset trains, checkpoints and reports COCO box
and mask AP through detectron2's COCOEvaluator; --eval-only reloads the result. The full run
(configs/builtin/mask_rcnn_dinat_mini_builtin_shapes.yaml, numbers in README.md) is too long
for the suite."""

from __future__ import annotations

import os

import pytest

from tests.conftest import tiny_dinat_opts

from .test_train_net import _copypaste
from .train_net_runner import REPO, SMALL_INPUTS, run_train_net

CONFIG = os.path.join(REPO, "configs", "builtin", "mask_rcnn_dinat_mini_builtin_shapes.yaml")
# a one-block-per-level DiNAT on 96 px images: seconds per iteration on a CPU
SMALL = tiny_dinat_opts("[[2], [1], [1], [1]]") + [
    "MODEL.FPN.OUT_CHANNELS",
    "64",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "128",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "64",
    *SMALL_INPUTS,
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.STEPS",
    "(100,)",
]
CASCADE = [
    "MODEL.ROI_HEADS.NAME",
    "StageMaskCascadeROIHeads",
    "MODEL.ROI_BOX_HEAD.NUM_CONV",
    "2",
    "MODEL.ROI_BOX_HEAD.CONV_DIM",
    "64",
    "MODEL.ROI_BOX_HEAD.NUM_FC",
    "1",
    "MODEL.ROI_BOX_HEAD.NORM",
    "BN",
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE",
    "giou",
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT",
    "10.0",
]


def run(datasets_root, output, *args, overrides=()):
    return run_train_net(
        datasets_root, output, *args, overrides=overrides, config=CONFIG, model=SMALL
    )


@pytest.fixture(scope="module")
def trained(datasets_root, tmp_path_factory):
    output = tmp_path_factory.mktemp("train_detection")
    result = run(
        datasets_root, output, overrides=["SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "2"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output, result


def test_short_training_reports_box_and_mask_ap(trained):
    output, result = trained
    assert {"model_0000001.pth", "model_final.pth", "metrics.json"} <= set(os.listdir(output))
    log = result.stdout + result.stderr
    assert "loss_mask" in log and "loss_rpn_cls" in log
    results = _copypaste(log)
    assert set(results) == {"bbox", "segm"}, results
    for task in ("bbox", "segm"):
        assert {"AP", "AP50", "AP75"} <= set(results[task])
        assert 0.0 <= results[task]["AP"] <= 100.0


def test_eval_only_reloads_the_detector(trained, datasets_root, tmp_path):
    output, _ = trained
    result = run(
        datasets_root,
        tmp_path,
        "--eval-only",
        overrides=["MODEL.WEIGHTS", os.path.join(output, "model_final.pth")],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(_copypaste(result.stdout + result.stderr)) == {"bbox", "segm"}


def test_cascade_trains_and_evaluates(datasets_root, tmp_path):
    result = run(datasets_root, tmp_path, overrides=["SOLVER.MAX_ITER", "2", *CASCADE])
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "loss_mask_stage2" in log
    assert set(_copypaste(log)) == {"bbox", "segm"}
