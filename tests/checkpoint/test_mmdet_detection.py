"""The DiNAT detection release's checkpoints (mmdetection layout) into our detectron2 models.

A state dict in the release's layout is made from one of our models with the inverse mapping
(written from the release's module names: FPN `lateral_convs` / `fpn_convs`, `RPNHead`,
`Shared2FCBBoxHead` / `ConvFCBBoxHead` with SyncBN (`bn`), `FCNMaskHead`, and a cascade's
per-stage `bbox_head.{i}` / `mask_head.{i}`); `tools/convert_mmdet_detection.py` must turn it
back into a checkpoint that fills a freshly initialised model with no missing or unexpected
key and gives exactly the outputs of the model it was made from. Other architectures,
variants and class counts are errors that name the keys.
"""

from __future__ import annotations

import os
import re

import pytest
import torch

from dinat_m2f.checkpoint.mmdet_detection import (
    convert_mmdet_detection,
    detectron2_to_mmdet_name,
    mmdet_to_detectron2_name,
    to_mmdet_layout,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DETECTION = os.path.join(REPO, "configs", "coco", "detection", "dinat")
MASK_RCNN = os.path.join(DETECTION, "mask_rcnn_dinat_mini_3x.yaml")
CASCADE = os.path.join(DETECTION, "cascade_mask_rcnn_dinat_mini_3x.yaml")
# CPU-friendly: small dilations for a small input (dilations hold no weights), BN instead of
# SyncBN in the cascade box heads (the same parameters), every detection kept
CPU = [
    "MODEL.DEVICE",
    "cpu",
    "SOLVER.AMP.ENABLED",
    "False",
    "MODEL.WEIGHTS",
    "",
    "MODEL.DINAT.DILATIONS",
    "[[1, 2, 1], [1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.0",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "50",
]


def build(config: str, seed: int, opts=()):
    from detectron2.modeling import build_model

    import dinat_m2f.modeling  # noqa: F401
    from dinat_m2f.engine.setup import load_cfg

    cfg = load_cfg(config, CPU + list(opts))
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    # non-trivial batch-norm statistics, so that they are checked too
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.uniform_(-0.1, 0.1)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 1.5)
    return model


def predict(model) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    image = torch.randint(0, 256, (3, 128, 160)).float()
    with torch.no_grad():
        instances = model([{"image": image, "height": 128, "width": 160}])[0]["instances"]
    assert len(instances) > 0
    return {
        name: value.tensor if hasattr(value, "tensor") else value
        for name, value in instances.get_fields().items()
    }


def save_mmdet_checkpoint(path, state: dict[str, torch.Tensor]) -> str:
    """The release's file format: mmcv's {"meta": ..., "state_dict": ...}."""
    meta = {"mmdet_version": "2.19.0", "CLASSES": ["person"] * 80, "epoch": 36}
    torch.save({"meta": meta, "state_dict": state}, path)
    return str(path)


def expected_release_keys(stages: int | None) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the release's Mask R-CNN (stages None) or Cascade Mask R-CNN neck
    and heads, from its model configs (80 classes, FPN 256, 3 anchors, 1024-wide fc)."""
    keys: dict[str, tuple[int, ...]] = {}
    widths = [64, 128, 256, 512]  # DiNAT-Mini
    for i, width in enumerate(widths):
        keys[f"neck.lateral_convs.{i}.conv.weight"] = (256, width, 1, 1)
        keys[f"neck.fpn_convs.{i}.conv.weight"] = (256, 256, 3, 3)
    keys["rpn_head.rpn_conv.weight"] = (256, 256, 3, 3)
    keys["rpn_head.rpn_cls.weight"] = (3, 256, 1, 1)
    keys["rpn_head.rpn_reg.weight"] = (12, 256, 1, 1)
    if stages is None:
        keys["roi_head.bbox_head.shared_fcs.0.weight"] = (1024, 256 * 7 * 7)
        keys["roi_head.bbox_head.shared_fcs.1.weight"] = (1024, 1024)
        keys["roi_head.bbox_head.fc_cls.weight"] = (81, 1024)
        keys["roi_head.bbox_head.fc_reg.weight"] = (320, 1024)
        heads = [""]
    else:
        heads = [f"{s}." for s in range(stages)]
        for s in heads:
            for j in range(4):
                keys[f"roi_head.bbox_head.{s}shared_convs.{j}.conv.weight"] = (256, 256, 3, 3)
                keys[f"roi_head.bbox_head.{s}shared_convs.{j}.bn.running_var"] = (256,)
            keys[f"roi_head.bbox_head.{s}shared_fcs.0.weight"] = (1024, 256 * 7 * 7)
            keys[f"roi_head.bbox_head.{s}fc_cls.weight"] = (81, 1024)
            keys[f"roi_head.bbox_head.{s}fc_reg.weight"] = (320, 1024)
    for s in heads:
        for j in range(4):
            keys[f"roi_head.mask_head.{s}convs.{j}.conv.weight"] = (256, 256, 3, 3)
        keys[f"roi_head.mask_head.{s}upsample.weight"] = (256, 256, 2, 2)
        keys[f"roi_head.mask_head.{s}conv_logits.weight"] = (80, 256, 1, 1)
    keys["backbone.patch_embed.proj.0.weight"] = (32, 3, 3, 3)
    keys["backbone.levels.0.blocks.0.attn.rpb"] = (2, 13, 13)
    keys["backbone.levels.2.downsample.reduction.weight"] = (512, 256, 3, 3)
    keys["backbone.norm3.weight"] = (512,)
    return keys


@pytest.fixture(scope="module", params=["mask_rcnn", "cascade"])
def source(request):
    """(kind, the model, its state dict in the release's layout, its predictions)."""
    config = MASK_RCNN if request.param == "mask_rcnn" else CASCADE
    model = build(config, seed=0)
    return request.param, config, model, to_mmdet_layout(model.state_dict()), predict(model)


def test_layout_has_the_release_module_names(source):
    kind, _, model, mmdet_state, _ = source
    expected = expected_release_keys(None if kind == "mask_rcnn" else 3)
    for key, shape in expected.items():
        assert key in mmdet_state, f"{key} missing from {sorted(mmdet_state)[:20]}..."
        assert tuple(mmdet_state[key].shape) == shape, key
    assert len(mmdet_state) == len(model.state_dict())
    prefixes = {k.split(".")[0] for k in mmdet_state}
    assert prefixes == {"backbone", "neck", "rpn_head", "roi_head"}
    if kind == "mask_rcnn":
        assert not any(re.match(r"roi_head\.(bbox|mask)_head\.\d", k) for k in mmdet_state)
        assert sum(k.startswith("roi_head.bbox_head.shared_fcs.") for k in mmdet_state) == 4


def test_converted_checkpoint_loads_strictly_and_gives_identical_outputs(source, tmp_path):
    from tools.convert_mmdet_detection import convert

    kind, config, _, mmdet_state, expected = source
    path = save_mmdet_checkpoint(tmp_path / "release.pth", mmdet_state)
    target = str(tmp_path / "d2.pth")
    report = convert(path, target, config, CPU)
    assert report == [], report  # nothing dropped, nothing missing

    fresh = build(config, seed=1)
    fresh_out = predict(fresh)
    differs = fresh_out["scores"].shape != expected["scores"].shape or not torch.equal(
        fresh_out["scores"], expected["scores"]
    )
    assert differs, "the fresh model must start different"
    weights = torch.load(target, map_location="cpu", weights_only=True)["model"]
    result = fresh.load_state_dict(weights, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    got = predict(fresh)
    assert set(got) == {"pred_boxes", "scores", "pred_classes", "pred_masks"}
    for name, value in expected.items():
        assert torch.equal(got[name], value), f"{kind}: {name} differs after conversion"


def test_detectron2_checkpointer_loads_the_output(source, tmp_path):
    """MODEL.WEIGHTS: detectron2's own loader reports no incompatible key."""
    from detectron2.checkpoint import DetectionCheckpointer

    from tools.convert_mmdet_detection import convert

    _, config, _, mmdet_state, expected = source
    path = save_mmdet_checkpoint(tmp_path / "release.pth", mmdet_state)
    convert(path, str(tmp_path / "d2.pth"), config, CPU)

    class Recording(DetectionCheckpointer):
        def _load_model(self, checkpoint):
            self.incompatible = super()._load_model(checkpoint)
            return self.incompatible

    fresh = build(config, seed=2)
    checkpointer = Recording(fresh)
    checkpointer.load(str(tmp_path / "d2.pth"))
    incompatible = checkpointer.incompatible
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert not incompatible.incorrect_shapes
    assert torch.equal(predict(fresh)["scores"], expected["scores"])


def test_dropped_keys_are_reported_or_refused(source):
    _, _, model, mmdet_state, _ = source
    state = dict(mmdet_state)
    state["neck.fpn_convs.4.conv.weight"] = torch.zeros(256, 256, 3, 3)  # an extra-conv FPN
    state["roi_head.semantic_head.conv.weight"] = torch.zeros(1)  # HTC's semantic branch
    with pytest.raises(ValueError, match=r"neck\.fpn_convs\.4\.conv\.weight") as error:
        convert_mmdet_detection(state, model.state_dict())
    assert "roi_head.semantic_head.conv.weight" in str(error.value)
    report: list[str] = []
    converted = convert_mmdet_detection(state, model.state_dict(), report, allow_unmatched=True)
    assert len(converted) == len(model.state_dict())
    assert len(report) == 2 and all(line.startswith("dropped ") for line in report)
    assert any("neck.fpn_convs.4.conv.weight" in line for line in report)


def test_missing_keys_are_reported_or_refused(source):
    _, _, model, mmdet_state, _ = source
    state = {k: v for k, v in mmdet_state.items() if not k.startswith("rpn_head.rpn_conv.")}
    with pytest.raises(ValueError, match=r"proposal_generator\.rpn_head\.conv\.weight"):
        convert_mmdet_detection(state, model.state_dict())
    report: list[str] = []
    convert_mmdet_detection(state, model.state_dict(), report, allow_missing=True)
    assert sorted(report) == [
        "missing proposal_generator.rpn_head.conv.bias (not in the checkpoint)",
        "missing proposal_generator.rpn_head.conv.weight (not in the checkpoint)",
    ]


def test_checkpoint_of_another_head_is_an_error_naming_it(source):
    """A Mask R-CNN checkpoint for the cascade config and the other way round."""
    kind, _, _, mmdet_state, _ = source
    other = build(CASCADE if kind == "mask_rcnn" else MASK_RCNN, seed=0)
    with pytest.raises(ValueError) as error:
        convert_mmdet_detection(mmdet_state, other.state_dict())
    message = str(error.value)
    if kind == "mask_rcnn":
        assert "the checkpoint is a Mask R-CNN (roi_head.bbox_head.shared_fcs.0.weight)" in message
    else:
        assert "the checkpoint is a Cascade Mask R-CNN (roi_head.bbox_head.0." in message
    assert "MODEL.ROI_HEADS.NAME" in message


def test_wrong_class_count_or_variant_names_the_key(source):
    _, config, _, mmdet_state, _ = source
    fewer = build(config, seed=0, opts=["MODEL.ROI_HEADS.NUM_CLASSES", "4"])
    with pytest.raises(ValueError, match=r"fc_cls\.weight.*\(81, 1024\).*\(5, 1024\).*NUM_CLASSES"):
        convert_mmdet_detection(mmdet_state, fewer.state_dict())


def test_not_an_mmdet_checkpoint():
    mask2former_like = {
        "sem_seg_head.predictor.query_feat.weight": torch.zeros(100, 256),
        "criterion.empty_weight": torch.ones(134),
    }
    with pytest.raises(ValueError, match="not an mmdetection detection checkpoint"):
        convert_mmdet_detection(mask2former_like, {"backbone.fpn_lateral2.weight": torch.zeros(1)})


def test_dinat_s_backbone_names_and_mismatch():
    """DiNAT_s: the release names its levels `layers.{i}` (Swin's), ours `levels.{i}`."""
    assert mmdet_to_detectron2_name("backbone.layers.2.blocks.5.attn.rpb", [2, 3, 4, 5]) == (
        "backbone.bottom_up.levels.2.blocks.5.attn.rpb"
    )
    assert (
        detectron2_to_mmdet_name(
            "backbone.bottom_up.levels.1.downsample.reduction.weight", [2, 3, 4, 5], dinat_s=True
        )
        == "backbone.layers.1.downsample.reduction.weight"
    )
    assert (
        detectron2_to_mmdet_name("backbone.bottom_up.levels.1.downsample.norm.weight", [2, 3, 4, 5])
        == "backbone.levels.1.downsample.norm.weight"
    )
    dinat_s = build(
        MASK_RCNN,
        seed=0,
        opts=[
            "MODEL.BACKBONE.NAME",
            "build_dinat_s_fpn_backbone",
            "MODEL.DINAT.EMBED_DIM",
            "96",
            "MODEL.DINAT.DEPTHS",
            "[2, 2, 6, 2]",
            "MODEL.DINAT.NUM_HEADS",
            "[3, 6, 12, 24]",
            "MODEL.DINAT.MLP_RATIO",
            "4.0",
            "MODEL.DINAT.DILATIONS",
            "[[1, 2], [1, 1], [1, 1, 1, 1, 1, 1], [1, 1]]",
        ],
    )
    state = to_mmdet_layout(dinat_s.state_dict(), dinat_s=True)
    assert "backbone.layers.3.blocks.1.mlp.fc2.weight" in state
    assert not any(k.startswith("backbone.levels.") for k in state)
    assert set(convert_mmdet_detection(state, dinat_s.state_dict())) == set(dinat_s.state_dict())
    dinat = build(MASK_RCNN, seed=0)
    with pytest.raises(ValueError, match=r"DiNAT_s.*MODEL\.BACKBONE\.NAME"):
        convert_mmdet_detection(state, dinat.state_dict(), allow_unmatched=True)


def test_cli_errors_exit_2(tmp_path, capsys):
    from tools.convert_mmdet_detection import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "absent.pth"), str(tmp_path / "out.pth"), "--config-file", MASK_RCNN])
    assert exit_info.value.code == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_cli_refuses_a_checkpoint_that_would_run_code(tmp_path, capsys, suffix):
    """The mmdetection converter reads through the one safe loader too: a pickled object that
    would create a file is refused, naming the file, and never runs."""
    from tests.checkpoint.test_safe_load import CreatesMarker, write_pickle
    from tools.convert_mmdet_detection import main

    marker = tmp_path / "marker"
    source = tmp_path / f"hostile{suffix}"
    payload = {"state_dict": {"backbone.w": torch.zeros(1), "x": CreatesMarker(marker)}}
    if suffix == ".pth":
        torch.save(payload, source)
    else:
        write_pickle(source, payload)
    with pytest.raises(SystemExit) as exit_info:
        main([str(source), str(tmp_path / "out.pth"), "--config-file", MASK_RCNN])
    assert exit_info.value.code == 2
    assert str(source) in capsys.readouterr().err
    assert not marker.exists()
