"""Exported R-CNN detectors (dinat_m2f/export/rcnn.py) in ONNX Runtime against detectron2's own
inference of the same model on the same image: one dynamic-size export run at two input sizes,
the same detections (boxes within 1e-3 px, classes, scores, mask probabilities) and, after the
numpy post-processing, the same pasted masks as detectron2's detector_postprocess.

The models are randomly initialised, with the RPN and box predictors re-drawn at unit scale:
detectron2 initialises them with std 0.01 / 0.001, which makes thousands of nearly equal
objectness logits and class scores whose top-k and NMS order would rest on float rounding."""

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from dinat_m2f.engine.setup import load_cfg
from tests.conftest import requires_native

pytest.importorskip("onnxruntime")

from dinat_m2f.export import NotExportableError, export_model  # noqa: E402
from dinat_m2f.export.deploy import ExportedModel, postprocess  # noqa: E402
from dinat_m2f.export.wrappers import graph_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = requires_native

# 4 classes (random class scores near 0.2, above the 0.05 threshold); fewer proposals and
# detections than COCO's (the box and mask heads cost per box)
SMALL_HEADS = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "SOLVER.AMP.ENABLED", "False",
    "MODEL.ROI_HEADS.NUM_CLASSES", "4",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "300",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
    "TEST.DETECTIONS_PER_IMAGE", "12",
]  # fmt: skip
TINY_BACKBONE = [
    "MODEL.DINAT.EMBED_DIM", "32",
    "MODEL.DINAT.DEPTHS", "[1, 1, 1, 1]",
    "MODEL.DINAT.NUM_HEADS", "[1, 2, 4, 8]",
    "MODEL.DINAT.DILATIONS", "[[2], [1], [1], [1]]",
    "MODEL.FPN.OUT_CHANNELS", "64",
    "MODEL.ROI_BOX_HEAD.CONV_DIM", "64",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "64",
]  # fmt: skip


def _model(config: str, opts: list[str]):
    cfg = load_cfg(str(ROOT / config), SMALL_HEADS + opts)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    generator = torch.Generator().manual_seed(1)
    predictors = [model.proposal_generator.rpn_head]
    heads = model.roi_heads.box_predictor
    predictors += list(heads) if isinstance(heads, torch.nn.ModuleList) else [heads]
    with torch.no_grad():
        for module in predictors:
            for param in module.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) / param[0].numel() ** 0.5)
    return cfg, model


def _check_against_detectron2(model, path: str, sizes) -> None:
    session = ExportedModel(path)
    for padded, image_size in sizes:
        torch.manual_seed(sum(image_size))
        pixels = torch.rand(3, *image_size) * 255
        image = torch.zeros(1, 3, *padded)
        image[0, :, : image_size[0], : image_size[1]] = (
            pixels - model.pixel_mean
        ) / model.pixel_std
        outputs = session(image.numpy(), image_size=image_size)
        with torch.no_grad():
            (raw,) = model.inference([{"image": pixels}], do_postprocess=False)
            (final,) = model([{"image": pixels, "height": 150, "width": 170}])
        assert len(raw) >= 5, "too few detections to compare"
        np.testing.assert_array_equal(outputs["classes"], raw.pred_classes.numpy())
        # boxes: 1e-3 px (measured up to 2.5e-4 px at ~100 px: the features' 1e-6 differences
        # pass through the box-delta exp)
        np.testing.assert_allclose(outputs["boxes"], raw.pred_boxes.tensor.numpy(), atol=1e-3)
        # scores: measured up to 1.5e-5 apart (softmax of logits 1e-5 apart)
        np.testing.assert_allclose(outputs["scores"], raw.scores.numpy(), atol=1e-4)
        np.testing.assert_allclose(
            outputs["mask_probs"], raw.pred_masks[:, 0].numpy(), atol=1e-4, rtol=0
        )
        ours = postprocess.detector_results(outputs, image_size, (150, 170))["instances"]
        ref = final["instances"]
        np.testing.assert_allclose(ours["boxes"], ref.pred_boxes.tensor.numpy(), atol=1e-3)
        masks = ref.pred_masks.numpy()
        union = (ours["masks"] | masks).sum((1, 2))
        iou = (ours["masks"] & masks).sum((1, 2)) / np.maximum(union, 1)
        # a box under a pixel pastes an empty mask on both sides (union 0): the same mask
        assert ((iou > 0.99) | (union == 0)).all(), iou


@pytest.mark.parametrize(
    "config, opts",
    [
        ("configs/coco/detection/dinat/mask_rcnn_dinat_tiny_3x.yaml", []),
        ("configs/coco/detection/dinat/cascade_mask_rcnn_dinat_tiny_3x.yaml", TINY_BACKBONE),
    ],
    ids=["mask_rcnn_dinat_tiny", "cascade_tiny_backbone"],
)
def test_detector_onnx_equals_detectron2(tmp_path, config, opts):
    cfg, model = _model(config, opts)
    result = export_model(cfg, model, torch.zeros(1, 3, 128, 160), str(tmp_path / "det.onnx"))
    assert (result.sizes.min_height, result.sizes.max_height) == (128, 192)
    # images smaller than their padded input, so that boxes are clipped inside the padding
    _check_against_detectron2(
        model, result.path, [((128, 160), (121, 150)), ((192, 128), (170, 128))]
    )


def test_detector_without_masks_is_refused(tmp_path):
    cfg, model = _model(
        "configs/coco/detection/dinat/mask_rcnn_dinat_tiny_3x.yaml",
        TINY_BACKBONE + ["MODEL.MASK_ON", "False"],
    )
    with pytest.raises(NotExportableError, match="MODEL.MASK_ON False"):
        graph_of(model)
