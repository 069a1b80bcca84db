"""The configs Mask2Former and DiNAT users already have work unchanged.

Fixtures: the released YAML files of Mask2Former (configs/coco, configs/ade20k at 9b0651c) and
of the DiNAT release (mask2former/configs at d334f5b), read from
`../shared/fixtures/official-configs` next to the repository (never copied here).

- Every file merges through the project's set-up (`load_cfg`, used by train_net.py, the demo
  and the tools) with its whole `_BASE_` chain, and a representative set (each backbone family
  x task) builds on the CPU; parameter counts are the published ones.
- Every default the official set-up functions give is the official one (`OFFICIAL_DEFAULTS`,
  written from the official files named in it), so a YAML relying on a default builds the
  released model: the DiNAT-L YAML relies on MLP_RATIO 2.0 and builds the 199.6M backbone.
"""

from __future__ import annotations

import pytest
import torch
from detectron2.config import get_cfg

from .helpers import FIXTURES, config_ids, load_config, lookup, same_default

if not FIXTURES.is_dir():
    pytest.skip(f"the official config fixtures are not at {FIXTURES}", allow_module_level=True)

FIXTURE_FILES = sorted(FIXTURES.rglob("*.yaml"))
FIXTURE_IDS = config_ids(FIXTURE_FILES, FIXTURES)
CPU = ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False"]

M2F = "facebookresearch/Mask2Former@9b0651c"
DINAT = "SHI-Labs/Neighborhood-Attention-Transformer@d334f5b"
D2 = "facebookresearch/detectron2"

# The table written from the official sources: function -> (source file, {key: default}).
# Every key the official function adds, with its official default.
OFFICIAL_DEFAULTS: dict[str, tuple[str, dict]] = {
    "add_deeplab_config": (
        f"{D2}: projects/DeepLab/deeplab/config.py",
        {
            "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0,
            "SOLVER.POLY_LR_POWER": 0.9,
            "SOLVER.POLY_LR_CONSTANT_ENDING": 0.0,
            "MODEL.SEM_SEG_HEAD.LOSS_TYPE": "hard_pixel_mining",
            "MODEL.SEM_SEG_HEAD.PROJECT_FEATURES": ["res2"],
            "MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS": [48],
            "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS": 256,
            "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS": [6, 12, 18],
            "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT": 0.1,
            "MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV": False,
            "MODEL.RESNETS.RES4_DILATION": 1,
            "MODEL.RESNETS.RES5_MULTI_GRID": [1, 2, 4],
            "MODEL.RESNETS.STEM_TYPE": "deeplab",
        },
    ),
    "add_maskformer2_config": (
        f"{M2F}: mask2former/config.py",
        {
            "INPUT.DATASET_MAPPER_NAME": "mask_former_semantic",
            "INPUT.COLOR_AUG_SSD": False,
            "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0,
            "INPUT.SIZE_DIVISIBILITY": -1,
            "SOLVER.WEIGHT_DECAY_EMBED": 0.0,
            "SOLVER.OPTIMIZER": "ADAMW",
            "SOLVER.BACKBONE_MULTIPLIER": 0.1,
            "MODEL.MASK_FORMER.DEEP_SUPERVISION": True,
            "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT": 0.1,
            "MODEL.MASK_FORMER.CLASS_WEIGHT": 1.0,
            "MODEL.MASK_FORMER.DICE_WEIGHT": 1.0,
            "MODEL.MASK_FORMER.MASK_WEIGHT": 20.0,
            "MODEL.MASK_FORMER.NHEADS": 8,
            "MODEL.MASK_FORMER.DROPOUT": 0.1,
            "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 2048,
            "MODEL.MASK_FORMER.ENC_LAYERS": 0,
            "MODEL.MASK_FORMER.DEC_LAYERS": 6,
            "MODEL.MASK_FORMER.PRE_NORM": False,
            "MODEL.MASK_FORMER.HIDDEN_DIM": 256,
            "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 100,
            "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "res5",
            "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": False,
            "MODEL.MASK_FORMER.TEST.SEMANTIC_ON": True,
            "MODEL.MASK_FORMER.TEST.INSTANCE_ON": False,
            "MODEL.MASK_FORMER.TEST.PANOPTIC_ON": False,
            "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.0,
            "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": 0.0,
            "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": False,
            "MODEL.MASK_FORMER.SIZE_DIVISIBILITY": 32,
            "MODEL.SEM_SEG_HEAD.MASK_DIM": 256,
            "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 0,
            "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "BasePixelDecoder",
            "MODEL.SWIN.PRETRAIN_IMG_SIZE": 224,
            "MODEL.SWIN.PATCH_SIZE": 4,
            "MODEL.SWIN.EMBED_DIM": 96,
            "MODEL.SWIN.DEPTHS": [2, 2, 6, 2],
            "MODEL.SWIN.NUM_HEADS": [3, 6, 12, 24],
            "MODEL.SWIN.WINDOW_SIZE": 7,
            "MODEL.SWIN.MLP_RATIO": 4.0,
            "MODEL.SWIN.QKV_BIAS": True,
            "MODEL.SWIN.QK_SCALE": None,
            "MODEL.SWIN.DROP_RATE": 0.0,
            "MODEL.SWIN.ATTN_DROP_RATE": 0.0,
            "MODEL.SWIN.DROP_PATH_RATE": 0.3,
            "MODEL.SWIN.APE": False,
            "MODEL.SWIN.PATCH_NORM": True,
            "MODEL.SWIN.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
            "MODEL.SWIN.USE_CHECKPOINT": False,
            "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "MultiScaleMaskedTransformerDecoder",
            "INPUT.IMAGE_SIZE": 1024,
            "INPUT.MIN_SCALE": 0.1,
            "INPUT.MAX_SCALE": 2.0,
            "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": [
                "res3",
                "res4",
                "res5",
            ],
            "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS": 4,
            "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS": 8,
            "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 12544,
            "MODEL.MASK_FORMER.OVERSAMPLE_RATIO": 3.0,
            "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO": 0.75,
        },
    ),
    "add_dinat_config": (
        f"{DINAT}: mask2former/train_m2f.py",
        {
            "MODEL.DINAT.EMBED_DIM": 192,
            "MODEL.DINAT.DEPTHS": [3, 4, 18, 5],
            "MODEL.DINAT.NUM_HEADS": [6, 12, 24, 48],
            "MODEL.DINAT.KERNEL_SIZE": 7,
            "MODEL.DINAT.DILATIONS": None,
            "MODEL.DINAT.MLP_RATIO": 2.0,
            "MODEL.DINAT.QKV_BIAS": True,
            "MODEL.DINAT.QK_SCALE": None,
            "MODEL.DINAT.DROP_RATE": 0.0,
            "MODEL.DINAT.ATTN_DROP_RATE": 0.0,
            "MODEL.DINAT.DROP_PATH_RATE": 0.3,
            "MODEL.DINAT.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
        },
    ),
}

# Keys this project adds beyond the official functions, with defaults that change nothing a
# official YAML builds (each documented "(ours)" in dinat_m2f/config.py).
OUR_EXTRA_KEYS = {
    "add_deeplab_config": set(),
    "add_maskformer2_config": {
        "SOLVER.WEIGHT_DECAY_POSITION",
        "SOLVER.AMP.PRECISION",
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD",
        # add_deeplab_config's, added when missing so that this function alone can train
        "SOLVER.POLY_LR_POWER",
        "SOLVER.POLY_LR_CONSTANT_ENDING",
        # broken samples (issue 16): off by default, so official runs stop as before
        "DATALOADER.SKIP_BROKEN_SAMPLES",
        "DATALOADER.MAX_BROKEN_FRACTION",
    },
    "add_dinat_config": {
        "MODEL.DINAT.LAYER_SCALE",
        "MODEL.DINAT.FROZEN_STAGES",
        "MODEL.DINAT.USE_CHECKPOINT",
    },
}

# Parameter counts: Mask2Former paper Table 1 (R50 44M, Swin-L 216M; also R101 63M, Swin-T
# 47M), DiNAT release / paper (DiNAT-L backbone 199.6M, Mask2Former with DiNAT-L 220M).
DINAT_L_COCO = (
    "dinat/coco/panoptic-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_100ep.yaml"
)
SWIN_L_COCO = (
    "mask2former/coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml"
)
PAPER_PARAMS = {
    "mask2former/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml": (44.0e6, 0.05e6),
    SWIN_L_COCO: (216e6, 0.5e6),
    DINAT_L_COCO: (220e6, 0.5e6),
}
DINAT_L_BACKBONE = (199.6e6, 0.05e6)

# one per backbone family x task (building every large model would take minutes)
BUILT = [
    "mask2former/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
    "mask2former/coco/instance-segmentation/maskformer2_R101_bs16_50ep.yaml",
    "mask2former/ade20k/semantic-segmentation/maskformer2_R101_bs16_90k.yaml",  # SyncBN ResNet
    "mask2former/ade20k/panoptic-segmentation/maskformer2_R50_bs16_160k.yaml",
    "mask2former/coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml",
    "mask2former/coco/instance-segmentation/swin/maskformer2_swin_small_bs16_50ep.yaml",
    "mask2former/ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml",
    "dinat/coco/panoptic-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_100ep.yaml",
    "dinat/ade20k/instance-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_160k.yaml",
    "dinat/cityscapes/semantic-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_90k.yaml",
    "dinat/cityscapes/instance-segmentation/maskformer2_R50_bs16_90k.yaml",
    "dinat/cityscapes/panoptic-segmentation/maskformer2_R50_bs16_90k.yaml",
]


def flat_keys(node, prefix="") -> set[str]:
    out = set()
    for key, value in node.items():
        if hasattr(value, "items"):
            out |= flat_keys(value, f"{prefix}{key}.")
        else:
            out.add(prefix + key)
    return out


def load(relative: str):
    """A fixture's config (relative to FIXTURES) on the CPU."""
    return load_config(FIXTURES / relative, CPU)


R50_PANOPTIC = "mask2former/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
KEPT = set(PAPER_PARAMS) | {R50_PANOPTIC}  # models more than one test looks at


@pytest.fixture(scope="module")
def models():
    """relative path -> built model, for the models in KEPT (freed after this module)."""
    cache = {}
    yield cache
    cache.clear()


def built(models: dict, relative: str):
    from detectron2.modeling import build_model

    import dinat_m2f  # noqa: F401  (registers models and datasets)

    if relative in models:
        return models[relative]
    torch.manual_seed(0)
    model = build_model(load(relative)).eval()
    if relative in KEPT:
        models[relative] = model
    return model


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- defaults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(OFFICIAL_DEFAULTS))
def test_every_official_default_is_the_official_one(function):
    import dinat_m2f.config as config

    source, table = OFFICIAL_DEFAULTS[function]
    cfg = get_cfg()
    getattr(config, function)(cfg)
    wrong = [
        f"{key} = {lookup(cfg, key)!r}, official {value!r}"
        for key, value in table.items()
        if not same_default(lookup(cfg, key), value)
    ]
    assert not wrong, f"{function} vs {source}:\n" + "\n".join(wrong)
    added = {k for k in flat_keys(cfg) - flat_keys(get_cfg()) if not k.startswith("MODEL.DiNAT.")}
    assert added - set(table) == OUR_EXTRA_KEYS[function], f"keys beyond {source}"


def test_the_setup_of_train_net_has_every_official_default():
    from dinat_m2f.config import default_cfg

    cfg = default_cfg()
    wrong = [
        f"{key} = {lookup(cfg, key)!r}, official {value!r} ({source})"
        for _, (source, table) in OFFICIAL_DEFAULTS.items()
        for key, value in table.items()
        if not same_default(lookup(cfg, key), value)
    ]
    assert not wrong, "\n".join(wrong)
    assert cfg.MODEL.DiNAT is cfg.MODEL.DINAT


def test_add_deeplab_config_is_detectron2s_when_installed():
    deeplab = pytest.importorskip("detectron2.projects.deeplab")
    from dinat_m2f.config import add_deeplab_config

    theirs, ours = get_cfg(), get_cfg()
    deeplab.add_deeplab_config(theirs)
    add_deeplab_config(ours)
    assert ours == theirs


def test_config_functions_come_with_the_package():
    """`from dinat_m2f import ...` as users of Mask2Former's train_net.py write it; together
    with detectron2's own add_deeplab_config (called first, as Mask2Former does)."""
    from dinat_m2f import add_deeplab_config, add_dinat_config, add_maskformer2_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    add_dinat_config(cfg)
    cfg.merge_from_file(str(FIXTURE_FILES[0]))


# --- merging and building ----------------------------------------------------------------------


def test_fixtures_were_found():
    assert len(FIXTURE_FILES) == 54, FIXTURE_IDS
    assert {p.parts[len(FIXTURES.parts)] for p in FIXTURE_FILES} == {"dinat", "mask2former"}


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=FIXTURE_IDS)
def test_every_official_yaml_merges_unchanged(path):
    cfg = load(path.relative_to(FIXTURES).as_posix())
    raw = path.read_text()
    if "D2DiNAT" in raw:
        assert cfg.MODEL.BACKBONE.NAME == "D2DiNAT" and cfg.MODEL.DINAT.MLP_RATIO == 2.0
    if "D2SwinTransformer" in raw:
        assert cfg.MODEL.BACKBONE.NAME == "D2SwinTransformer"
    if "MultiScaleMaskedTransformerDecoder" in raw:
        assert cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE == "multi_scale_pixel_decoder"


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=FIXTURE_IDS)
def test_every_official_yaml_builds(path):
    """Every fixture builds the model it asks for, on the meta device (shapes without memory;
    a representative set is built with real weights below). The Base-*.yaml files name no
    meta-architecture, so they build detectron2's default, as they do with the official code."""
    from detectron2.modeling import build_model

    import dinat_m2f  # noqa: F401  (registers models and datasets)

    cfg = load(path.relative_to(FIXTURES).as_posix()).clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        model = build_model(cfg)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert type(model).__name__ == cfg.MODEL.META_ARCHITECTURE
    check_structure(cfg, model)


@pytest.mark.parametrize("relative", BUILT)
def test_a_representative_set_builds_on_the_cpu(models, relative):
    """Every backbone family (ResNet, Swin, DiNAT) for every task builds with the backbone,
    widths and heads the YAML asks for."""
    model = built(models, relative)
    assert next(model.parameters()).device.type == "cpu"
    check_structure(load(relative), model)


def check_structure(cfg, model):
    """The backbone, widths and (for Mask2Former) heads the config asks for."""
    shapes = model.backbone.output_shape()
    if cfg.MODEL.META_ARCHITECTURE == "MaskFormer":
        assert list(shapes) == ["res2", "res3", "res4", "res5"]
        assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
        decoder = model.sem_seg_head.predictor
        assert decoder.class_embed.out_features == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES + 1
        assert decoder.num_queries == cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES
        assert decoder.num_layers == cfg.MODEL.MASK_FORMER.DEC_LAYERS - 1
        assert model.size_divisibility == 32
    family = cfg.MODEL.BACKBONE.NAME
    if family == "build_resnet_backbone":
        assert shapes["res5"].channels == 2048
    else:
        node = cfg.MODEL.SWIN if family == "D2SwinTransformer" else cfg.MODEL.DINAT
        embed = node.EMBED_DIM
        assert [s.channels for s in shapes.values()] == [embed * 2**i for i in range(4)]


@pytest.mark.parametrize("relative", sorted(PAPER_PARAMS))
def test_parameter_counts_are_the_published_ones(models, relative):
    expected, tolerance = PAPER_PARAMS[relative]
    model = built(models, relative)
    assert abs(count(model) - expected) <= tolerance, f"{relative}: {count(model) / 1e6:.3f}M"
    if "dinat_large" in relative:
        backbone = count(model.backbone)
        assert abs(backbone - DINAT_L_BACKBONE[0]) <= DINAT_L_BACKBONE[1], backbone


def test_the_dinat_l_yaml_builds_the_released_backbone(models):
    """The DiNAT-L YAML relies on the release's MLP_RATIO 2.0 default: its backbone has the
    parameter names and shapes of the release's ImageNet-22K DiNAT-L (kernel 11), so none of
    the released tensors is lost, plus the four output norms."""
    from dinat_m2f.modeling.backbone.dinat import MASK2FORMER_K11, dinat_large_21k_11x11

    backbone = built(models, DINAT_L_COCO).backbone
    assert backbone.dilations == MASK2FORMER_K11
    assert backbone.levels[0].blocks[0].mlp.fc1.out_features == 2 * 192
    release = dinat_large_21k_11x11(num_classes=21841, out_indices=()).state_dict()
    ours = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in release.items()}
    assert {k: v for k, v in theirs.items() if not k.startswith(("head.", "norm."))} == {
        k: v for k, v in ours.items() if not k.startswith(("norm0", "norm1", "norm2", "norm3"))
    }


def test_an_official_model_runs_inference_on_the_cpu(models):
    model = built(models, R50_PANOPTIC)
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    with torch.no_grad():
        (result,) = model([{"image": image, "height": 64, "width": 96}])
    assert result["sem_seg"].shape == (133, 64, 96)
    assert result["panoptic_seg"][0].shape == (64, 96)
    assert len(result["instances"]) == 100


ADE_PANOPTIC_R50 = "mask2former/ade20k/panoptic-segmentation/maskformer2_R50_bs16_160k.yaml"


def test_mapillary_vistas_settings_build():
    """Mask2Former's Mapillary Vistas configs (not among the fixtures) are the R50 model with
    65 classes, ignore value 65 and the Mapillary dataset names registered here."""
    from detectron2.data import MetadataCatalog
    from detectron2.modeling import build_model

    import dinat_m2f  # noqa: F401
    from dinat_m2f.engine.setup import load_cfg

    for task, mapper, panoptic in (
        ("panoptic", "mask_former_panoptic", "True"),
        ("sem_seg", "mask_former_semantic", "False"),
    ):
        cfg = load_cfg(
            str(FIXTURES / ADE_PANOPTIC_R50),
            CPU
            + [
                "DATASETS.TRAIN",
                f"('mapillary_vistas_{task}_train',)",
                "DATASETS.TEST",
                f"('mapillary_vistas_{task}_val',)",
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
                "65",
                "MODEL.SEM_SEG_HEAD.IGNORE_VALUE",
                "65",
                "INPUT.DATASET_MAPPER_NAME",
                mapper,
                "MODEL.MASK_FORMER.TEST.INSTANCE_ON",
                "False",
                "MODEL.MASK_FORMER.TEST.PANOPTIC_ON",
                panoptic,
            ],
        )
        assert MetadataCatalog.get(f"mapillary_vistas_{task}_train").ignore_label == 65
        model = build_model(cfg)
        assert model.sem_seg_head.predictor.class_embed.out_features == 66


# --- the entry points --------------------------------------------------------------------------


def test_train_net_demo_and_tools_take_an_official_yaml(tmp_path):
    """train_net.py's setup_cfg, demo/demo.py's and tools/analyze_model.py's."""
    from detectron2.engine import default_argument_parser

    from dinat_m2f.engine.setup import setup_cfg
    from tests.demo.conftest import load_demo_module
    from tools import analyze_model

    dinat_l = FIXTURES / DINAT_L_COCO
    args = default_argument_parser().parse_args(
        ["--config-file", str(dinat_l), *CPU, "OUTPUT_DIR", str(tmp_path)]
    )
    cfg = setup_cfg(args)
    assert cfg.MODEL.DINAT.MLP_RATIO == 2.0 and (tmp_path / "config.yaml").is_file()

    demo = load_demo_module()
    args = demo.get_parser().parse_args(
        ["--config-file", str(dinat_l), "--input", "x.jpg", "--opts", *CPU]
    )
    assert demo.setup_cfg(args).MODEL.DINAT.KERNEL_SIZE == 11

    r50 = FIXTURES / "mask2former/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
    results = analyze_model.main(["--config-file", str(r50), "--tasks", "parameter"])
    assert abs(results["params"] - 23.5e6) < 0.1e6  # ResNet-50 without its classifier


# --- bad input ---------------------------------------------------------------------------------


def test_unknown_keys_and_unsupported_defaults_are_errors_naming_them(tmp_path):
    from detectron2.modeling import build_model

    from dinat_m2f.engine.setup import load_cfg

    typo = tmp_path / "typo.yaml"
    typo.write_text(f"_BASE_: {FIXTURE_FILES[0]}\nMODEL:\n  DINAT:\n    MLP_RATIOS: 2.0\n")
    with pytest.raises(KeyError, match=r"MODEL\.DINAT\.MLP_RATIOS"):
        load_cfg(str(typo))
    r50 = str(FIXTURES / "mask2former/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    # Mask2Former's own defaults do not build Mask2Former: every config sets these two
    decoder = ["MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "BasePixelDecoder"]
    with pytest.raises(ValueError, match=r"PIXEL_DECODER_NAME='BasePixelDecoder' is not regist"):
        build_model(load_cfg(r50, CPU + decoder))
    with pytest.raises(ValueError, match=r"MODEL\.MASK_FORMER\.TRANSFORMER_IN_FEATURE='res5'"):
        build_model(load_cfg(r50, CPU + ["MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", "res5"]))
    swin = str(
        FIXTURES / "mask2former/ade20k/semantic-segmentation/swin/"
        "maskformer2_swin_tiny_bs16_160k.yaml"
    )
    with pytest.raises(ValueError, match=r"MODEL\.SWIN\.NUM_HEADS\[1\]=5 does not divide"):
        build_model(load_cfg(swin, CPU + ["MODEL.SWIN.NUM_HEADS", "[3, 5, 12, 24]"]))
    with pytest.raises(ValueError, match=r"MODEL\.SWIN\.OUT_FEATURES must name features"):
        build_model(load_cfg(swin, CPU + ["MODEL.SWIN.OUT_FEATURES", "['res6']"]))
