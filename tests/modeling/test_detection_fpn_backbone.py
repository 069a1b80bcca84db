"""build_{dinat,nat,dinat_s}_fpn_backbone: registered in detectron2, DiNAT bottom-up with its
per-level output norms + FPN p2..p6; NAT has every dilation 1; unknown or unavailable levels
in the config are errors naming the key and the level."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone

import dinat_m2f.modeling  # noqa: F401  (registers the builders)
from dinat_m2f.engine.setup import load_cfg
from dinat_m2f.modeling.backbone.blocks import PatchEmbed, PatchMerging
from dinat_m2f.modeling.backbone.dinat import ConvDownsampler

REPO = Path(__file__).resolve().parents[2]
MASK_RCNN = str(REPO / "configs" / "coco" / "detection" / "dinat" / "mask_rcnn_dinat_mini_3x.yaml")

SMALL = [  # a one-block-per-level DiNAT, cheap to build and run
    "MODEL.DEVICE",
    "cpu",
    "SOLVER.AMP.ENABLED",
    "False",
    "MODEL.DINAT.EMBED_DIM",
    "32",
    "MODEL.DINAT.DEPTHS",
    "[1, 2, 1, 1]",
    "MODEL.DINAT.NUM_HEADS",
    "[1, 2, 4, 8]",
    "MODEL.DINAT.DILATIONS",
    "[[2], [1, 2], [1], [1]]",
    "MODEL.FPN.OUT_CHANNELS",
    "64",
]


def cfg_with(*opts):
    return load_cfg(MASK_RCNN, SMALL + list(opts))


@pytest.mark.parametrize(
    "name", ["build_dinat_fpn_backbone", "build_nat_fpn_backbone", "build_dinat_s_fpn_backbone"]
)
def test_registered_and_outputs_p2_to_p6(name):
    assert name in BACKBONE_REGISTRY
    cfg = cfg_with("MODEL.BACKBONE.NAME", name)
    torch.manual_seed(0)
    backbone = build_backbone(cfg, ShapeSpec(channels=3)).eval()
    shapes = backbone.output_shape()
    assert list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32, 64]
    assert {s.channels for s in shapes.values()} == {64}
    assert backbone.size_divisibility == 32
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 128, 192))
    for level, stride in zip(shapes, [4, 8, 16, 32, 64]):
        assert out[level].shape == (1, 64, 128 // stride, 192 // stride)
    # the DiNAT release's per-level output norms of the bottom-up: LayerNorm norm0..norm3
    bottom_up = backbone.bottom_up
    for i, width in enumerate([32, 64, 128, 256]):
        norm = getattr(bottom_up, f"norm{i}")
        assert isinstance(norm, torch.nn.LayerNorm) and norm.normalized_shape == (width,)
    kinds = {"build_dinat_s_fpn_backbone": (PatchEmbed, PatchMerging)}
    tokenizer, downsampler = kinds.get(name, (None, ConvDownsampler))
    assert isinstance(bottom_up.levels[0].downsample, downsampler)
    if tokenizer is not None:
        assert isinstance(bottom_up.patch_embed, tokenizer)
    dilations = [[b.attn.dilation for b in level.blocks] for level in bottom_up.levels]
    if name == "build_nat_fpn_backbone":
        assert all(d in (1, (1, 1)) for level in dilations for d in level), dilations
    else:
        assert dilations[0][0] in (2, (2, 2)), dilations


def test_output_norms_are_applied():
    """p-levels are computed from the normalised level outputs: changing norm1's bias changes
    them (the norms are used, not just present)."""
    cfg = cfg_with()
    torch.manual_seed(0)
    backbone = build_backbone(cfg, ShapeSpec(channels=3)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = backbone(x)["p3"].clone()
        backbone.bottom_up.norm1.bias.add_(1.0)
        after = backbone(x)["p3"]
    assert not torch.allclose(before, after)


def test_unknown_fpn_level_names_key_and_level():
    with pytest.raises(ValueError, match=r"MODEL\.FPN\.IN_FEATURES.*unknown backbone level.*res6"):
        build_backbone(cfg_with("MODEL.FPN.IN_FEATURES", '["res3", "res4", "res6"]'))


def test_fpn_level_not_output_by_the_backbone():
    with pytest.raises(ValueError, match=r"MODEL\.FPN\.IN_FEATURES.*\['res2'\].*OUT_FEATURES"):
        build_backbone(cfg_with("MODEL.DINAT.OUT_FEATURES", '["res3", "res4", "res5"]'))


@pytest.mark.parametrize(
    "key,value,level",
    [
        ("MODEL.RPN.IN_FEATURES", '["p2", "p3", "p7"]', "p7"),
        ("MODEL.ROI_HEADS.IN_FEATURES", '["p2", "p3", "res4"]', "res4"),
    ],
)
def test_unknown_head_level_names_key_and_level(key, value, level):
    pattern = re.escape(key) + f".*unknown backbone level.*{level}"
    with pytest.raises(ValueError, match=pattern):
        build_backbone(cfg_with(key, value))


def test_unknown_dinat_out_feature_names_key():
    with pytest.raises(ValueError, match=r"MODEL\.DINAT\.OUT_FEATURES.*stage5"):
        build_backbone(cfg_with("MODEL.DINAT.OUT_FEATURES", '["res2", "res3", "res4", "stage5"]'))


def test_nat_builder_ignores_dinat_dilations_without_touching_cfg():
    cfg = cfg_with("MODEL.BACKBONE.NAME", "build_nat_fpn_backbone")
    before = [list(level) for level in cfg.MODEL.DINAT.DILATIONS]
    build_backbone(cfg)
    assert [list(level) for level in cfg.MODEL.DINAT.DILATIONS] == before


def test_nat_builder_takes_the_default_dilations_none():
    """MODEL.DINAT.DILATIONS None (add_dinat_config's default) is NAT's all-1 schedule too."""
    cfg = cfg_with("MODEL.BACKBONE.NAME", "build_nat_fpn_backbone", "MODEL.DINAT.DILATIONS", "None")
    assert cfg.MODEL.DINAT.DILATIONS is None
    backbone = build_backbone(cfg)
    assert all(b.attn.dilation == (1, 1) for lv in backbone.bottom_up.levels for b in lv.blocks)
