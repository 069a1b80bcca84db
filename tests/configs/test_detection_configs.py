"""The R-CNN detector configs (configs/coco/detection/ and configs/builtin/mask_rcnn_*) merge
into the project's config and hold the DiNAT detection release's 3x recipe, read from its
mmdetection files (SHI-Labs/Neighborhood-Attention-Transformer, detection/configs):

- _base_/models/mask_rcnn_dinat.py, cascade_mask_rcnn_dinat.py: FPN 256 with 5 outputs,
  anchors 8 x stride with ratios 0.5 / 1 / 2, RPN and ROI samplers, Shared2FCBBoxHead, the
  FCNMaskHead, cascade IoUs 0.5 / 0.6 / 0.7, stage loss weights 1 / 0.5 / 0.25, RPN losses;
- dinat/{mask_rcnn,cascade_mask_rcnn}_dinat_<variant>_3x_coco.py: backbone size, dilations
  [1,28,1] [1,7,1,14] [1,3,1,5,1,7]... [1,3,1,3,1], drop path per variant, layer scale
  (Base), 4conv1fc SyncBN cascade box heads with GIoU (weight 10) and class-specific
  regression, the DETR-style multi-scale + crop training, AdamW lr 1e-4 (7.5e-5 for the
  cascade Base / Large) and weight decay 0.05 without decay on 'norm' and 'rpb', fp16 except
  Large;
- _base_/schedules/schedule_3x.py: 36 epochs, steps after 27 and 33, linear warmup 500
  iterations from 0.001.

Every MODEL.DINAT key is set by the files themselves, so another default does not change them.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import yaml

from .helpers import CONFIG_ROOT, config_ids, load_config, mismatches

DETECTION = CONFIG_ROOT / "coco" / "detection"
COCO_FILES = sorted(DETECTION.rglob("*.yaml"))
VARIANT_FILES = sorted((DETECTION / "dinat").glob("*.yaml"))
BUILTIN = CONFIG_ROOT / "builtin" / "mask_rcnn_dinat_mini_builtin_shapes.yaml"
ALL_FILES = COCO_FILES + [BUILTIN]


MINI_DILATIONS = [[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7], [1, 3, 1, 3, 1]]
DEEP_DILATIONS = [[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7] * 3, [1, 3, 1, 3, 1]]


class Recipe(NamedTuple):
    """A config's backbone size and optimisation, from the release's dinat/*_3x_coco.py."""

    embed_dim: int
    depths: list[int]
    num_heads: list[int]
    mlp_ratio: float
    drop_path_rate: float
    layer_scale: float | None = None
    base_lr: float = 1e-4
    amp: bool = True  # fp16 unless the file says otherwise


MINI = dict(embed_dim=64, depths=[3, 4, 6, 5], num_heads=[2, 4, 8, 16], mlp_ratio=3.0)
TINY = dict(embed_dim=64, depths=[3, 4, 18, 5], num_heads=[2, 4, 8, 16], mlp_ratio=3.0)
SMALL = dict(embed_dim=96, depths=[3, 4, 18, 5], num_heads=[3, 6, 12, 24], mlp_ratio=2.0)
BASE = dict(embed_dim=128, depths=[3, 4, 18, 5], num_heads=[4, 8, 16, 32], mlp_ratio=2.0)
LARGE = dict(embed_dim=192, depths=[3, 4, 18, 5], num_heads=[6, 12, 24, 48], mlp_ratio=2.0)
RELEASE = {
    "mask_rcnn_dinat_mini_3x.yaml": Recipe(**MINI, drop_path_rate=0.2),
    "mask_rcnn_dinat_tiny_3x.yaml": Recipe(**TINY, drop_path_rate=0.2),
    "mask_rcnn_dinat_small_3x.yaml": Recipe(**SMALL, drop_path_rate=0.35),
    "cascade_mask_rcnn_dinat_mini_3x.yaml": Recipe(**MINI, drop_path_rate=0.2),
    "cascade_mask_rcnn_dinat_tiny_3x.yaml": Recipe(**TINY, drop_path_rate=0.3),
    "cascade_mask_rcnn_dinat_small_3x.yaml": Recipe(**SMALL, drop_path_rate=0.5),
    "cascade_mask_rcnn_dinat_base_3x.yaml": Recipe(
        **BASE, drop_path_rate=0.6, layer_scale=1e-5, base_lr=7.5e-5
    ),
    "cascade_mask_rcnn_dinat_large_3x.yaml": Recipe(
        **LARGE, drop_path_rate=0.6, base_lr=7.5e-5, amp=False
    ),
}


COMMON = {
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.MASK_ON": True,
    "MODEL.BACKBONE.NAME": "build_dinat_fpn_backbone",
    "MODEL.DINAT.KERNEL_SIZE": 7,
    "MODEL.DINAT.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],
    "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
    "INPUT.FORMAT": "RGB",
    "MODEL.FPN.IN_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.FPN.OUT_CHANNELS": 256,
    "MODEL.ANCHOR_GENERATOR.SIZES": [[32], [64], [128], [256], [512]],
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
    "MODEL.RPN.IN_FEATURES": ["p2", "p3", "p4", "p5", "p6"],
    "MODEL.RPN.IOU_THRESHOLDS": [0.3, 0.7],
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": 256,
    "MODEL.RPN.POSITIVE_FRACTION": 0.5,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 2000,
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 1000,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 1000,
    "MODEL.RPN.NMS_THRESH": 0.7,
    "MODEL.ROI_HEADS.IN_FEATURES": ["p2", "p3", "p4", "p5"],
    "MODEL.ROI_HEADS.NUM_CLASSES": 80,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 512,
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": 0.25,
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": [0.5],
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.05,
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": 0.5,
    "TEST.DETECTIONS_PER_IMAGE": 100,
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 1024,
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": False,
    "MODEL.ROI_MASK_HEAD.NAME": "MaskRCNNConvUpsampleHead",
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 4,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 256,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": 14,
    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": False,
    "DATASETS.TRAIN": ["coco_2017_train"],
    "DATASETS.TEST": ["coco_2017_val"],
    "INPUT.DATASET_MAPPER_NAME": "detectron2_instance",
    "INPUT.MIN_SIZE_TRAIN": list(range(480, 801, 32)),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice",
    "INPUT.MAX_SIZE_TRAIN": 1333,
    "INPUT.RANDOM_FLIP": "horizontal",
    "INPUT.CROP.ENABLED": False,
    "INPUT.DETR_CROP.ENABLED": True,
    "INPUT.DETR_CROP.PROB": 0.5,
    "INPUT.DETR_CROP.MIN_SIZE": [400, 500, 600],
    "INPUT.DETR_CROP.TYPE": "absolute_range",
    "INPUT.DETR_CROP.SIZE": [384, 600],
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TEST": 1333,
    "SOLVER.OPTIMIZER": "ADAMW",
    "SOLVER.WEIGHT_DECAY": 0.05,
    "SOLVER.WEIGHT_DECAY_NORM": 0.0,
    "SOLVER.WEIGHT_DECAY_POSITION": 0.0,
    "SOLVER.BACKBONE_MULTIPLIER": 1.0,
    "SOLVER.CLIP_GRADIENTS.ENABLED": False,
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.LR_SCHEDULER_NAME": "WarmupMultiStepLR",
    # 36 epochs of 7330 iterations (117,266 images / 16), steps after epochs 27 and 33
    "SOLVER.MAX_ITER": 36 * 7330,
    "SOLVER.STEPS": [27 * 7330, 33 * 7330],
    "SOLVER.GAMMA": 0.1,
    "SOLVER.WARMUP_METHOD": "linear",
    "SOLVER.WARMUP_FACTOR": 0.001,
    "SOLVER.WARMUP_ITERS": 500,
    "SOLVER.AMP.PRECISION": "float16",
}
MASK_RCNN_HEADS = {
    "MODEL.ROI_HEADS.NAME": "StandardROIHeads",
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_CONV": 0,
    "MODEL.ROI_BOX_HEAD.NUM_FC": 2,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": [10.0, 10.0, 5.0, 5.0],
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE": "smooth_l1",
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": 0.0,  # L1
    "MODEL.RPN.SMOOTH_L1_BETA": 0.0,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 1000,
    "MODEL.RPN.BOUNDARY_THRESH": -1,
}
CASCADE_HEADS = {
    "MODEL.ROI_HEADS.NAME": "StageMaskCascadeROIHeads",
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_CONV": 4,
    "MODEL.ROI_BOX_HEAD.CONV_DIM": 256,
    "MODEL.ROI_BOX_HEAD.NUM_FC": 1,
    "MODEL.ROI_BOX_HEAD.NORM": "SyncBN",
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE": "giou",
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT": 10.0,
    "MODEL.ROI_BOX_CASCADE_HEAD.IOUS": [0.5, 0.6, 0.7],
    "MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS": [
        [10.0, 10.0, 5.0, 5.0],
        [20.0, 20.0, 10.0, 10.0],
        [30.0, 30.0, 15.0, 15.0],
    ],
    "MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS": [1.0, 0.5, 0.25],
    "MODEL.RPN.SMOOTH_L1_BETA": 1.0 / 9.0,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 2000,
    "MODEL.RPN.BOUNDARY_THRESH": 0,
}


def test_every_release_config_is_here():
    assert sorted(p.name for p in VARIANT_FILES) == sorted(RELEASE)


@pytest.mark.parametrize("path", ALL_FILES, ids=config_ids(ALL_FILES))
def test_plain_yaml_with_existing_base(path):
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict)
    if path.name == "Base-RCNN-DiNAT-FPN-3x.yaml":  # the root of the detection chain
        assert "_BASE_" not in raw
    else:
        assert (path.parent / raw["_BASE_"]).is_file()
    assert "DiNAT" not in raw.get("MODEL", {}), "one spelling: MODEL.DINAT"


@pytest.mark.parametrize("path", VARIANT_FILES, ids=config_ids(VARIANT_FILES))
def test_release_recipe(path):
    cfg = load_config(path)
    recipe = RELEASE[path.name]
    expected = dict(COMMON)
    expected.update(CASCADE_HEADS if path.name.startswith("cascade") else MASK_RCNN_HEADS)
    deep = recipe.depths[2] != 6
    expected.update(
        {
            "MODEL.DINAT.EMBED_DIM": recipe.embed_dim,
            "MODEL.DINAT.DEPTHS": recipe.depths,
            "MODEL.DINAT.NUM_HEADS": recipe.num_heads,
            "MODEL.DINAT.MLP_RATIO": recipe.mlp_ratio,
            "MODEL.DINAT.DILATIONS": DEEP_DILATIONS if deep else MINI_DILATIONS,
            "MODEL.DINAT.DROP_PATH_RATE": recipe.drop_path_rate,
            "SOLVER.BASE_LR": recipe.base_lr,
            "SOLVER.AMP.ENABLED": recipe.amp,
        }
    )
    bad = mismatches(cfg, expected)
    assert not bad, f"{path}:\n" + "\n".join(bad)
    assert cfg.MODEL.DINAT.LAYER_SCALE == recipe.layer_scale
    assert cfg.MODEL.WEIGHTS.endswith("_fpn.pth"), "converted with --prefix backbone.bottom_up."
    pretrain = "in22k" if "large" in path.name else "in1k"
    assert pretrain in cfg.MODEL.WEIGHTS


# other MODEL.DINAT defaults (hashable: tuples for lists)
SENTINELS = (
    ("MODEL.DINAT.EMBED_DIM", 192),
    ("MODEL.DINAT.DEPTHS", (3, 4, 18, 5)),
    ("MODEL.DINAT.NUM_HEADS", (6, 12, 24, 48)),
    ("MODEL.DINAT.KERNEL_SIZE", 11),
    ("MODEL.DINAT.DILATIONS", ((1, 1, 1), (1, 1, 1, 1), (1,) * 18, (1,) * 5)),
    ("MODEL.DINAT.MLP_RATIO", 2.0),
    ("MODEL.DINAT.QKV_BIAS", False),
    ("MODEL.DINAT.QK_SCALE", 0.5),
    ("MODEL.DINAT.DROP_RATE", 0.1),
    ("MODEL.DINAT.ATTN_DROP_RATE", 0.1),
    ("MODEL.DINAT.DROP_PATH_RATE", 0.3),
    ("MODEL.DINAT.LAYER_SCALE", 1.0),
    ("MODEL.DINAT.OUT_FEATURES", ("res5",)),
    ("MODEL.DINAT.FROZEN_STAGES", 2),
    ("MODEL.DINAT.USE_CHECKPOINT", True),
)


@pytest.mark.parametrize(
    "path", VARIANT_FILES + [BUILTIN], ids=config_ids(VARIANT_FILES + [BUILTIN])
)
def test_backbone_keys_do_not_depend_on_defaults(path):
    """Other MODEL.DINAT defaults (the official D2DiNAT ones, and others) give the same node."""
    assert load_config(path, defaults=SENTINELS).MODEL.DINAT == load_config(path).MODEL.DINAT


def _sides(short_side: int) -> list[int]:
    return [short_side // 4 // 2**i for i in range(4)]


@pytest.mark.parametrize("path", VARIANT_FILES, ids=config_ids(VARIANT_FILES))
def test_dilations_fit_the_test_size_and_span_the_training_sizes(path):
    """L // d >= kernel at the 800 px test size; at the smallest training size (480) the
    release's schedule is padded but each dilated window still spans real tokens."""
    cfg = load_config(path)
    k = cfg.MODEL.DINAT.KERNEL_SIZE
    for side, level in zip(_sides(cfg.INPUT.MIN_SIZE_TEST), cfg.MODEL.DINAT.DILATIONS):
        assert all(side // d >= k for d in level), (side, level)
    for side, level in zip(_sides(min(cfg.INPUT.MIN_SIZE_TRAIN)), cfg.MODEL.DINAT.DILATIONS):
        assert all(side // d >= 1 for d in level), (side, level)


def test_builtin_config():
    cfg = load_config(BUILTIN)
    bad = mismatches(
        cfg,
        {
            "MODEL.DEVICE": "cpu",
            "MODEL.WEIGHTS": "",
            "SOLVER.AMP.ENABLED": False,
            "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
            "MODEL.ROI_HEADS.NAME": "StandardROIHeads",
            "MODEL.BACKBONE.NAME": "build_dinat_fpn_backbone",
            "MODEL.DINAT.EMBED_DIM": 64,
            "MODEL.DINAT.DEPTHS": [3, 4, 6, 5],
            "DATASETS.TRAIN": ["builtin_shapes_train_instance"],
            "DATASETS.TEST": ["builtin_shapes_val_instance"],
            "INPUT.DATASET_MAPPER_NAME": "detectron2_instance",
            "INPUT.MASK_FORMAT": "bitmask",
            "INPUT.DETR_CROP.ENABLED": False,
            "SEED": 0,
            "TEST.EVAL_PERIOD": 0,
        },
    )
    assert not bad, "\n".join(bad)
    from detectron2.data import MetadataCatalog

    import dinat_m2f.data  # noqa: F401  (registers the built-in dataset)

    things = MetadataCatalog.get("builtin_shapes_val_instance").thing_classes
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == len(things) == 4
    # dilations fit its 128-160 px inputs wherever a level is at least a kernel wide
    for side, level in zip(_sides(min(cfg.INPUT.MIN_SIZE_TRAIN)), cfg.MODEL.DINAT.DILATIONS):
        assert all(side // d >= 7 if side >= 7 else d == 1 for d in level), (side, level)


def test_readme_lists_every_detection_config():
    readme = (CONFIG_ROOT / "README.md").read_text()
    missing = [i for i in config_ids(VARIANT_FILES + [BUILTIN]) if i not in readme]
    assert not missing, f"configs/README.md lacks {missing}"
