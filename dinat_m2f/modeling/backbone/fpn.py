"""DiNAT / NAT / DiNAT_s with a feature pyramid, for detectron2's R-CNN detectors.

`build_dinat_fpn_backbone`, `build_nat_fpn_backbone` and `build_dinat_s_fpn_backbone` are
registered in detectron2's BACKBONE_REGISTRY (MODEL.BACKBONE.NAME). Each builds the backbone
from MODEL.DINAT (the bottom-up; its per-level output LayerNorms `norm{i}` are those of the
DiNAT detection release) and detectron2's FPN from MODEL.FPN, with a max-pooled extra level:
outputs p2..p6 at strides 4..64 with MODEL.FPN.OUT_CHANNELS channels, as mmdetection's
`FPN(num_outs=5)` in the release's configs.

Module names: the bottom-up is `bottom_up.*` (the release's `backbone.*`), the lateral and
output convolutions `fpn_lateral{2..5}` / `fpn_output{2..5}` (the release's
`neck.lateral_convs.{0..3}` / `neck.fpn_convs.{0..3}`).
"""

from __future__ import annotations

import logging

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from .adapter import FEATURE_NAMES
from .dinat import D2DiNAT, D2DiNATs

logger = logging.getLogger(__name__)

# detectron2 meta-architectures -> the head keys that name FPN levels
_HEAD_LEVEL_KEYS = {
    "GeneralizedRCNN": ("MODEL.RPN.IN_FEATURES", "MODEL.ROI_HEADS.IN_FEATURES"),
    "ProposalNetwork": ("MODEL.RPN.IN_FEATURES",),
}


def _lookup(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def check_fpn_in_features(cfg) -> list[str]:
    """MODEL.FPN.IN_FEATURES, checked against the backbone's levels and MODEL.DINAT.OUT_FEATURES.

    Raises:
        ValueError: naming the key and the unknown or missing level.
    """
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    unknown = [name for name in in_features if name not in FEATURE_NAMES]
    if unknown or not in_features:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES = {in_features}: unknown backbone level(s) {unknown}; "
            f"the DiNAT backbones output {list(FEATURE_NAMES)}"
        )
    out_features = list(cfg.MODEL.DINAT.OUT_FEATURES)
    missing = [name for name in in_features if name not in out_features]
    if missing:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES = {in_features} asks for level(s) {missing} that "
            f"MODEL.DINAT.OUT_FEATURES = {out_features} does not output; add them there"
        )
    return in_features


def check_head_in_features(cfg, levels: list[str]) -> None:
    """The RPN / ROI-head keys of the meta-architecture name only levels in `levels`.

    Raises:
        ValueError: naming the key and the unknown level.
    """
    for key in _HEAD_LEVEL_KEYS.get(cfg.MODEL.META_ARCHITECTURE, ()):
        names = list(_lookup(cfg, key))
        unknown = [name for name in names if name not in levels]
        if unknown:
            raise ValueError(
                f"{key} = {names}: unknown backbone level(s) {unknown}; the FPN of "
                f"MODEL.BACKBONE.NAME={cfg.MODEL.BACKBONE.NAME} outputs {levels}"
            )


def _build(cfg, input_shape: ShapeSpec, bottom_up_class: type, all_dilations_one: bool) -> FPN:
    in_features = check_fpn_in_features(cfg)
    if all_dilations_one:
        depths = list(cfg.MODEL.DINAT.DEPTHS)
        nat_dilations = [[1] * depth for depth in depths]
        dilations = cfg.MODEL.DINAT.DILATIONS  # None (the default) also means all 1
        if dilations is not None and [list(level) for level in dilations] != nat_dilations:
            logger.info("NAT: MODEL.DINAT.DILATIONS is not read, every dilation is 1")
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.DINAT.DILATIONS = nat_dilations
    bottom_up = bottom_up_class(cfg, input_shape)
    backbone = FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
    check_head_in_features(cfg, list(backbone.output_shape()))
    return backbone


@BACKBONE_REGISTRY.register()
def build_dinat_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """DiNAT (`D2DiNAT`, MODEL.DINAT) + FPN (MODEL.FPN): {"p2".."p6": (B, OUT_CHANNELS,
    H/stride, W/stride)}, strides 4..64; size divisibility 32."""
    return _build(cfg, input_shape, D2DiNAT, all_dilations_one=False)


@BACKBONE_REGISTRY.register()
def build_nat_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """NAT + FPN: `build_dinat_fpn_backbone` with every dilation 1 (MODEL.DINAT.DILATIONS is
    not read)."""
    return _build(cfg, input_shape, D2DiNAT, all_dilations_one=True)


@BACKBONE_REGISTRY.register()
def build_dinat_s_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """DiNAT_s (`D2DiNATs`: Swin's patch embedding and merging; MODEL.DINAT, MLP_RATIO 4.0
    for the paper's models) + FPN, as `build_dinat_fpn_backbone`."""
    return _build(cfg, input_shape, D2DiNATs, all_dilations_one=False)
