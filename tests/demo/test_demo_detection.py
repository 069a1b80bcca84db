"""demo/demo.py with an R-CNN detector (the built-in Mask R-CNN config, a tiny random model):
the instances are drawn with the dataset's thing names; Mask2Former's output flags do not
apply; a Mask2Former checkpoint for the detector's config is refused before anything runs."""

from __future__ import annotations

import sys

import cv2
import pytest
import torch

from .conftest import REPO_ROOT

DETECTOR = REPO_ROOT / "configs" / "builtin" / "mask_rcnn_dinat_mini_builtin_shapes.yaml"
TINY_DETECTOR = [
    "MODEL.DEVICE", "cpu",
    "MODEL.DINAT.EMBED_DIM", "32", "MODEL.DINAT.DEPTHS", "[1, 1, 1, 1]",
    "MODEL.DINAT.NUM_HEADS", "[1, 2, 4, 8]", "MODEL.DINAT.DILATIONS", "[[1], [1], [1], [1]]",
    "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "5",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128",
]  # fmt: skip


@pytest.fixture(scope="module")
def detector_weights(tmp_path_factory):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    import dinat_m2f.modeling  # noqa: F401
    from dinat_m2f.engine.setup import load_cfg

    torch.manual_seed(0)
    model = build_model(load_cfg(str(DETECTOR), TINY_DETECTOR))
    path = tmp_path_factory.mktemp("weights") / "detector.pth"
    DetectionCheckpointer(model, save_dir=str(path.parent)).save(path.stem)
    return path


def args(weights, *extra, opts=()):
    return ["--config-file", str(DETECTOR), "--no-progress", *extra,
            "--opts", *TINY_DETECTOR, "MODEL.WEIGHTS", str(weights), *opts]  # fmt: skip


def test_draws_the_detected_instances(demo, detector_weights, val_images, tmp_path, capsys):
    out = tmp_path / "drawn"
    status = demo.main(
        args(
            detector_weights,
            "--input",
            *map(str, val_images),
            "--output",
            str(out),
            "--confidence-threshold",
            "0.0",
        )
    )
    assert status == 0, capsys.readouterr().err
    lines = [line for line in capsys.readouterr().out.splitlines() if "instance:" in line]
    assert len(lines) == len(val_images)
    assert all("5 of 5 instances with score >= 0" in line for line in lines), lines
    names = ("circle", "square", "triangle", "star")
    assert all(any(name in line for name in names) for line in lines), lines
    for path in val_images:
        drawing = cv2.imread(str(out / path.name))
        assert drawing is not None and drawing.shape == cv2.imread(str(path)).shape
        assert (drawing != cv2.imread(str(path))).any(), "nothing drawn"


def test_show_instance_needs_no_mask_former_flag(demo, detector_weights, val_images, capsys):
    """MODEL.MASK_FORMER.TEST.INSTANCE_ON is False in a detector's config; it is not read."""
    visualization = sys.modules["visualization"]
    from dinat_m2f.engine.setup import load_cfg

    cfg = load_cfg(str(DETECTOR), TINY_DETECTOR + ["MODEL.WEIGHTS", str(detector_weights)])
    assert not cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON
    vis_demo = visualization.VisualizationDemo(cfg, show="instance", confidence_threshold=0.0)
    predictions, _ = vis_demo.run_on_image(cv2.imread(str(val_images[0])))
    assert set(predictions) == {"instances"} and vis_demo.mode_of(predictions) == "instance"
    # a detector has no semantic output: asking for it is an error naming what it outputs
    status = demo.main(args(detector_weights, "--input", str(val_images[0]), "--show", "semantic"))
    assert status == 2
    assert "does not output 'sem_seg'" in capsys.readouterr().err


def test_mask2former_weights_for_the_detector_are_refused(demo, weights, val_images, capsys):
    status = demo.main(args(weights, "--input", str(val_images[0])))
    assert status == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "sem_seg_head" in err
