"""The R-CNN detectors built from configs/coco/detection: parameter counts against the DiNAT
detection release's table (detection/DiNAT.md: COCO's 80 classes), and the per-stage-mask
Cascade R-CNN ROI heads (StageMaskCascadeROIHeads): losses per stage with their weights, a
mask head per stage that learns, averaged mask probabilities and logits at test time,
class-specific refinement between stages, and errors naming the config key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

import dinat_m2f.modeling  # noqa: F401  (registers the builders and ROI heads)
from dinat_m2f.engine.setup import load_cfg
from dinat_m2f.modeling.roi_heads import StageMaskCascadeROIHeads
from tests.conftest import tiny_dinat_opts

DETECTION = Path(__file__).resolve().parents[2] / "configs" / "coco" / "detection" / "dinat"

# detection/DiNAT.md of the release: "# of Params" per config
OFFICIAL_PARAMS = {
    "mask_rcnn_dinat_mini_3x.yaml": 40e6,
    "mask_rcnn_dinat_tiny_3x.yaml": 48e6,
    "mask_rcnn_dinat_small_3x.yaml": 70e6,
    "cascade_mask_rcnn_dinat_mini_3x.yaml": 77e6,
    "cascade_mask_rcnn_dinat_tiny_3x.yaml": 85e6,
    "cascade_mask_rcnn_dinat_small_3x.yaml": 108e6,
    "cascade_mask_rcnn_dinat_base_3x.yaml": 147e6,
    "cascade_mask_rcnn_dinat_large_3x.yaml": 258e6,
}
CPU = ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", "MODEL.WEIGHTS", ""]


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_matches_the_release(name):
    cfg = load_cfg(str(DETECTION / name), CPU)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 80
    model = build_model(cfg)
    count = sum(p.numel() for p in model.parameters())
    official = OFFICIAL_PARAMS[name]
    print(f"{name}: {count / 1e6:.2f} M (release: {official / 1e6:.0f} M)")
    assert abs(count - official) / official < 0.05, f"{name}: {count / 1e6:.2f} M"


# A small cascade for behaviour tests: a one-block DiNAT, 4 classes, 64-wide heads.
SMALL_CASCADE = (
    CPU
    + tiny_dinat_opts()
    + [
        "MODEL.FPN.OUT_CHANNELS",
        "64",
        "MODEL.ROI_BOX_HEAD.CONV_DIM",
        "64",
        "MODEL.ROI_BOX_HEAD.FC_DIM",
        "128",
        "MODEL.ROI_BOX_HEAD.NORM",
        "BN",
        "MODEL.ROI_MASK_HEAD.CONV_DIM",
        "64",
        "MODEL.ROI_HEADS.NUM_CLASSES",
        "4",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        "64",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN",
        "100",
        "MODEL.RPN.POST_NMS_TOPK_TEST",
        "50",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
        "TEST.DETECTIONS_PER_IMAGE",
        "10",
    ]
)
CASCADE = str(DETECTION / "cascade_mask_rcnn_dinat_mini_3x.yaml")
H, W = 96, 128


def small_cascade(*opts):
    torch.manual_seed(0)
    return build_model(load_cfg(CASCADE, SMALL_CASCADE + list(opts)))


def batch():
    torch.manual_seed(1)
    instances = Instances((H, W))
    instances.gt_boxes = Boxes(torch.tensor([[8.0, 10.0, 48.0, 60.0], [60.0, 20.0, 120.0, 90.0]]))
    instances.gt_classes = torch.tensor([1, 3])
    masks = torch.zeros(2, H, W, dtype=torch.bool)
    masks[0, 10:60, 8:48] = True
    masks[1, 20:90, 60:120] = True
    instances.gt_masks = BitMasks(masks)
    image = torch.randint(0, 256, (3, H, W)).float()
    return [{"image": image, "instances": instances, "height": H, "width": W}]


def train_losses(model) -> dict[str, torch.Tensor]:
    model.train()
    torch.manual_seed(2)
    with EventStorage():
        return model(batch())


def test_cascade_has_a_mask_head_per_stage_and_class_specific_boxes():
    model = small_cascade()
    heads = model.roi_heads
    assert isinstance(heads, StageMaskCascadeROIHeads)
    assert heads.num_cascade_stages == 3 and len(heads.mask_head) == 3
    assert [p.bbox_pred.out_features for p in heads.box_predictor] == [16, 16, 16]  # 4 x 4
    assert [
        len([m for m in h.modules() if isinstance(m, torch.nn.BatchNorm2d)]) for h in heads.box_head
    ] == [4, 4, 4]  # 4conv1fc with norm


def test_losses_per_stage_weighted_and_every_mask_head_learns():
    model = small_cascade()
    losses = train_losses(model)
    expected = {f"loss_{k}_stage{s}" for k in ("cls", "box_reg", "mask") for s in range(3)}
    assert expected | {"loss_rpn_cls", "loss_rpn_loc"} == set(losses)
    sum(losses.values()).backward()
    for stage, head in enumerate(model.roi_heads.mask_head):
        grad = head.predictor.weight.grad
        assert grad is not None and grad.abs().sum() > 0, f"mask head {stage} got no gradient"
    unweighted = train_losses(
        small_cascade("MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS", "[1.0, 1.0, 1.0]")
    )
    for stage, weight in enumerate([1.0, 0.5, 0.25]):
        for kind in ("cls", "box_reg", "mask"):
            key = f"loss_{kind}_stage{stage}"
            torch.testing.assert_close(losses[key], unweighted[key] * weight, msg=key)


def test_inference_averages_mask_probabilities_of_all_stages():
    model = small_cascade().eval()
    inputs = batch()
    del inputs[0]["instances"]
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features)
        instances, _ = model.roi_heads(images, features, proposals)
        heads = model.roi_heads
        detections = instances[0]
        assert len(detections) > 0
        pooled = heads.mask_pooler(
            [features[f] for f in heads.mask_in_features], [detections.pred_boxes]
        )
        rows = torch.arange(len(detections))
        probs = [h.layers(pooled)[rows, detections.pred_classes].sigmoid() for h in heads.mask_head]
    assert detections.pred_masks.shape == (len(detections), 1, 28, 28)
    torch.testing.assert_close(detections.pred_masks[:, 0], sum(probs) / 3)
    # not just the last head's
    assert not torch.allclose(detections.pred_masks[:, 0], probs[-1])


def test_scores_are_the_softmax_of_the_averaged_logits():
    model = small_cascade(
        "MODEL.ROI_HEADS.NMS_THRESH_TEST", "1.0", "TEST.DETECTIONS_PER_IMAGE", "1000"
    ).eval()
    heads = model.roi_heads
    inputs = batch()
    del inputs[0]["instances"]
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features)
        logits = []
        original = heads._run_stage

        def spy(features_, proposals_, stage):
            out = original(features_, proposals_, stage)
            logits.append(out[0])
            return out

        heads._run_stage = spy
        instances = heads._forward_box(features, proposals)[0]
    probs = torch.softmax(sum(logits) / 3, dim=-1)[:, :-1]  # (R, K), no NMS merging (thresh 1)
    assert sorted(instances.scores.tolist(), reverse=True)[:5] == pytest.approx(
        sorted(probs.flatten().tolist(), reverse=True)[:5], abs=1e-6
    )


def test_next_stage_boxes_follow_the_gt_class_in_training_and_the_best_class_at_test():
    heads = small_cascade().roi_heads
    proposals = Instances((H, W))
    proposals.proposal_boxes = Boxes(torch.tensor([[20.0, 20.0, 60.0, 60.0]] * 2))
    proposals.gt_classes = torch.tensor([1, 4])  # foreground class 1; background (= 4)
    logits = torch.tensor([[0.0, 0.0, 5.0, 0.0, 9.0]] * 2)  # best foreground class 2
    deltas = torch.zeros(2, 16)
    for k in range(4):  # class k shifts the box right by k pixels (weights 10: dx = k / 40)
        deltas[:, 4 * k] = 10.0 * k / 40.0
    heads.train()
    boxes = heads._boxes_for_next_stage(0, (logits, deltas), [proposals])[0]
    torch.testing.assert_close(boxes[:, 0], torch.tensor([21.0, 22.0]))  # gt 1; bg -> argmax 2
    heads.eval()
    boxes = heads._boxes_for_next_stage(0, (logits, deltas), [proposals])[0]
    torch.testing.assert_close(boxes[:, 0], torch.tensor([22.0, 22.0]))


def test_no_detection_gives_empty_masks():
    model = small_cascade("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.0").eval()
    inputs = batch()
    del inputs[0]["instances"]
    with torch.no_grad():
        instances = model(inputs)[0]["instances"]
    assert len(instances) == 0 and instances.pred_masks.shape[0] == 0


def test_stage_loss_weights_must_match_the_stages():
    with pytest.raises(ValueError, match=r"STAGE_LOSS_WEIGHTS = \[1\.0, 0\.5\].*3"):
        small_cascade("MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS", "[1.0, 0.5]")
