"""Every YAML under configs/ merges into the project's config (`default_cfg()`: detectron2's
defaults plus every `add_*_config`, following `_BASE_`, as train_net.py reads it) and keeps
the paper's settings: dataset names and class counts, task flags, solver, inputs, and DiNAT
dilation schedules that fit the inputs they run on. Files under a `swin/` folder are the
torchvision Swin baseline (`D2TorchvisionSwin`, MODEL.TVSWIN): the same checks except the
DiNAT-specific ones (dilations, DiNAT variants), and Mask2Former's Swin settings instead.

Dilation rule (DiNAT): with kernel k, a dilation d is valid on a feature map of side L when
L // d >= k; smaller maps are zero-padded by the attention module. The level-i side is
`input // 4 // 2**i` for the short side of the input. The tests hold:

- at the single-scale test size, every config strictly: L // d >= k at every level whose map is
  at least k wide; a level narrower than the kernel is padded at any dilation, so it must use
  d = 1 (least padding; only the CPU built-in config has such a level);
- at the training crop, the same, except for the paper's own DiNAT-L schedule, kept verbatim:
  it needs 616 px inputs and the Cityscapes crop is 512 px high, so there the test only asks
  L // d >= 1 (the dilated neighbourhood still spans real tokens; the module pads the rest);
- at the multi-scale test sizes of semantic configs (TEST.AUG, off by default), L // d >= 1.

Dataset registration is another package's work: the known dataset names live here.

The R-CNN detector configs (configs/coco/detection/, configs/builtin/mask_rcnn_*) have their
own tests: tests/configs/test_detection_configs.py.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import yaml
from detectron2.config import CfgNode

from dinat_m2f.config import default_cfg
from dinat_m2f.modeling.backbone.dinat import IMAGENET_224_K7, MASK2FORMER_K11, VARIANTS

from .helpers import CONFIG_ROOT, REPO, by_id, config_ids, load_config, lookup, mismatches

CONFIG_FILES = sorted(
    p
    for p in CONFIG_ROOT.rglob("*.yaml")
    if "detection" not in p.relative_to(CONFIG_ROOT).parts and not p.name.startswith("mask_rcnn_")
)
CONFIG_IDS = config_ids(CONFIG_FILES)
BUILTIN_SHAPES_MODULE = REPO / "dinat_m2f" / "data" / "datasets" / "builtin_shapes.py"

# The built-in synthetic dataset: its registered metadata (dinat_m2f/data/datasets/
# builtin_shapes.py) gives the class count; 4 thing + 4 stuff classes if it cannot be read.
BUILTIN_SHAPES_NAMES = (
    "builtin_shapes_train_panoptic_with_sem_seg",
    "builtin_shapes_val_panoptic_with_sem_seg",
)
BUILTIN_SHAPES_ASSUMED_CLASSES = 8

# dataset name -> (family, tasks its annotations serve, number of classes)
KNOWN_DATASETS = {
    "coco_2017_train": ("coco", {"instance"}, 80),
    "coco_2017_val": ("coco", {"instance"}, 80),
    "coco_2017_train_panoptic": ("coco", {"panoptic"}, 133),
    "coco_2017_val_panoptic": ("coco", {"panoptic"}, 133),
    "coco_2017_train_panoptic_with_sem_seg": ("coco", {"panoptic", "semantic"}, 133),
    "coco_2017_val_panoptic_with_sem_seg": ("coco", {"panoptic", "semantic"}, 133),
    "ade20k_sem_seg_train": ("ade20k", {"semantic"}, 150),
    "ade20k_sem_seg_val": ("ade20k", {"semantic"}, 150),
    "ade20k_full_sem_seg_train": ("ade20k_full", {"semantic"}, 847),
    "ade20k_full_sem_seg_val": ("ade20k_full", {"semantic"}, 847),
    "ade20k_panoptic_train": ("ade20k", {"panoptic", "semantic"}, 150),
    "ade20k_panoptic_val": ("ade20k", {"panoptic", "semantic"}, 150),
    "ade20k_instance_train": ("ade20k", {"instance"}, 100),
    "ade20k_instance_val": ("ade20k", {"instance"}, 100),
    "cityscapes_fine_sem_seg_train": ("cityscapes", {"semantic"}, 19),
    "cityscapes_fine_sem_seg_val": ("cityscapes", {"semantic"}, 19),
    "cityscapes_fine_panoptic_train": ("cityscapes", {"panoptic"}, 19),
    "cityscapes_fine_panoptic_val": ("cityscapes", {"panoptic"}, 19),
    "cityscapes_fine_instance_seg_train": ("cityscapes", {"instance"}, 8),
    "cityscapes_fine_instance_seg_val": ("cityscapes", {"instance"}, 8),
    **{
        name: ("builtin", {"panoptic", "instance", "semantic"}, None)
        for name in BUILTIN_SHAPES_NAMES
    },
}

MAPPERS = {
    "semantic": {"mask_former_semantic"},
    "instance": {"mask_former_instance", "coco_instance_lsj"},
    "panoptic": {"mask_former_panoptic", "coco_panoptic_lsj"},
}
LSJ_MAPPERS = {"coco_instance_lsj", "coco_panoptic_lsj"}
# (SEMANTIC_ON, INSTANCE_ON, PANOPTIC_ON) per task
TEST_FLAGS = {
    "semantic": (True, False, False),
    "instance": (False, True, False),
    "panoptic": (True, True, True),
}
TASK_FOLDERS = {f"{task}-segmentation": task for task in TEST_FLAGS}

# the paper's schedule per dataset family for DiNAT-L: (iterations, scheduler, steps)
PAPER_SCHEDULES = {
    "coco": (737500, "WarmupMultiStepLR", (655556, 710184)),
    "ade20k": (160000, "WarmupPolyLR", None),
    "cityscapes": (90000, "WarmupPolyLR", None),
}
# Mask2Former's 50-epoch COCO schedule, used by the smaller variants
COCO_50EP = (368750, "WarmupMultiStepLR", (327778, 355092))
# (training crop, single-scale test size, MIN_SIZE_TRAIN = 0.5x..2.0x of this) of DiNAT-L
PAPER_INPUTS = {"ade20k": ([640, 640], 640, 640), "cityscapes": ([512, 1024], 1024, 1024)}

# Mask2Former's model settings, shared by every paper-dataset config
MASK2FORMER = {
    "MODEL.META_ARCHITECTURE": "MaskFormer",
    "MODEL.BACKBONE.NAME": "D2DiNAT",
    "MODEL.DINAT.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.PIXEL_MEAN": [123.675, 116.280, 103.530],
    "MODEL.PIXEL_STD": [58.395, 57.120, 57.375],
    "INPUT.FORMAT": "RGB",
    "MODEL.SEM_SEG_HEAD.NAME": "MaskFormerHead",
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "MSDeformAttnPixelDecoder",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": 4,
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 6,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 256,
    "MODEL.SEM_SEG_HEAD.MASK_DIM": 256,
    "MODEL.SEM_SEG_HEAD.NORM": "GN",
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 255,
    "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "MultiScaleMaskedTransformerDecoder",
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "multi_scale_pixel_decoder",
    "MODEL.MASK_FORMER.DEEP_SUPERVISION": True,
    "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT": 0.1,
    "MODEL.MASK_FORMER.CLASS_WEIGHT": 2.0,
    "MODEL.MASK_FORMER.MASK_WEIGHT": 5.0,
    "MODEL.MASK_FORMER.DICE_WEIGHT": 5.0,
    "MODEL.MASK_FORMER.HIDDEN_DIM": 256,
    "MODEL.MASK_FORMER.NHEADS": 8,
    "MODEL.MASK_FORMER.DROPOUT": 0.0,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 2048,
    "MODEL.MASK_FORMER.DEC_LAYERS": 10,
    "MODEL.MASK_FORMER.PRE_NORM": False,
    "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": False,
    "MODEL.MASK_FORMER.SIZE_DIVISIBILITY": 32,
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 12544,
    "MODEL.MASK_FORMER.OVERSAMPLE_RATIO": 3.0,
    "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO": 0.75,
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": 0.8,
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.8,
    "SOLVER.OPTIMIZER": "ADAMW",
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.BASE_LR": 0.0001,
    "SOLVER.WEIGHT_DECAY": 0.05,
    "SOLVER.WEIGHT_DECAY_NORM": 0.0,
    "SOLVER.WEIGHT_DECAY_EMBED": 0.0,
    "SOLVER.BACKBONE_MULTIPLIER": 0.1,
    "SOLVER.WARMUP_FACTOR": 1.0,
    "SOLVER.WARMUP_ITERS": 0,
    "SOLVER.CLIP_GRADIENTS.ENABLED": True,
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model",
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 0.01,
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": 2.0,
    "SOLVER.AMP.ENABLED": True,
    "SOLVER.CHECKPOINT_PERIOD": 5000,
    "TEST.EVAL_PERIOD": 5000,
    "DATALOADER.NUM_WORKERS": 4,
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": True,
}

# the Swin baseline: backbone keys replacing MASK2FORMER's DiNAT ones, and per size word of
# the file name: (MODEL.TVSWIN.VARIANT, WINDOW_SIZE), Mask2Former's Swin-T / Swin-L (384 px)
SWIN_BACKBONE = {
    "MODEL.BACKBONE.NAME": "D2TorchvisionSwin",
    "MODEL.TVSWIN.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.TVSWIN.DROP_PATH_RATE": 0.3,
}
SWIN_SIZES = {
    "tiny": ("swin_t", 7),
    "small": ("swin_s", 7),
    "base": ("swin_b", 7),
    "large": ("swin_l", 12),
}

# the CPU smoke setting on the built-in shapes
BUILTIN = {
    "MODEL.DEVICE": "cpu",
    "MODEL.WEIGHTS": "",
    "MODEL.BACKBONE.NAME": "D2DiNAT",
    "MODEL.DINAT.KERNEL_SIZE": 7,
    "MODEL.SEM_SEG_HEAD.NORM": "GN",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 64,
    "MODEL.SEM_SEG_HEAD.MASK_DIM": 64,
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 2,
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD": 256,
    "MODEL.MASK_FORMER.HIDDEN_DIM": 64,
    "MODEL.MASK_FORMER.DEC_LAYERS": 4,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 20,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 256,
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 1024,
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": 0.8,
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.5,
    "SOLVER.IMS_PER_BATCH": 4,
    "SOLVER.BASE_LR": 0.0003,
    "SOLVER.BACKBONE_MULTIPLIER": 1.0,
    "SOLVER.MAX_ITER": 600,
    "SOLVER.LR_SCHEDULER_NAME": "WarmupPolyLR",
    "SOLVER.CHECKPOINT_PERIOD": 100,
    "SOLVER.AMP.ENABLED": False,
    "TEST.EVAL_PERIOD": 0,
    "INPUT.MIN_SIZE_TRAIN": (128, 144, 160),
    "INPUT.MAX_SIZE_TRAIN": 256,
    "INPUT.MIN_SIZE_TEST": 160,
    "INPUT.DATASET_MAPPER_NAME": "mask_former_panoptic",
    "DATALOADER.NUM_WORKERS": 1,
}


def dataset_folder(path: Path) -> str | None:
    """ "coco" / "ade20k" / "cityscapes" / "builtin", None for configs/Base-Mask2Former.yaml."""
    parts = path.relative_to(CONFIG_ROOT).parts
    return parts[0] if len(parts) > 1 else None


def task_of(path: Path) -> str | None:
    parts = path.relative_to(CONFIG_ROOT).parts
    if parts[0] == "builtin":
        return "panoptic"
    return TASK_FOLDERS.get(parts[1]) if len(parts) > 2 else None


def variant_of(path: Path) -> str | None:
    """The DiNAT variant of a DiNAT config file (None for other files)."""
    match = re.match(r"maskformer2_dinat_([a-z]+)_", path.name)
    return match.group(1) if match else None


def is_swin(path: Path) -> bool:
    return path.parent.name == "swin"


def size_of(path: Path) -> str | None:
    """ "tiny" .. "large" of a DiNAT or Swin config file (None for base files)."""
    match = re.match(r"maskformer2_(?:dinat|tvswin)_([a-z]+)_", path.name)
    return match.group(1) if match else None


DINAT_CONFIG_FILES = [p for p in CONFIG_FILES if not is_swin(p)]
DINAT_CONFIG_IDS = config_ids(DINAT_CONFIG_FILES)
SWIN_CONFIG_FILES = [p for p in CONFIG_FILES if is_swin(p)]


def paper_configs() -> list[Path]:
    return [p for p in CONFIG_FILES if dataset_folder(p) in PAPER_SCHEDULES]


@functools.cache
def builtin_shapes_classes() -> tuple[int, str]:
    """(number of classes, where it comes from) of the built-in shapes dataset."""
    if not BUILTIN_SHAPES_MODULE.exists():
        return BUILTIN_SHAPES_ASSUMED_CLASSES, "assumed (builtin_shapes.py not written yet)"
    import importlib

    from detectron2.data import MetadataCatalog

    importlib.import_module("dinat_m2f.data.datasets.builtin_shapes")
    meta = MetadataCatalog.get(BUILTIN_SHAPES_NAMES[0])
    things = list(meta.get("thing_classes", []) or [])
    stuff = list(meta.get("stuff_classes", []) or [])
    if not things and not stuff:
        return BUILTIN_SHAPES_ASSUMED_CLASSES, "assumed (no metadata registered on import)"
    # Mask2Former's panoptic-with-sem-seg metadata lists every class in stuff_classes
    count = len(stuff) if set(things) <= set(stuff) else len(things) + len(stuff)
    return count, f"registered metadata of {BUILTIN_SHAPES_NAMES[0]}"


def level_sides(short_side: int, levels: int) -> list[int]:
    return [short_side // 4 // 2**i for i in range(levels)]


def dilation_violations(cfg: CfgNode, short_side: int, relaxed: bool = False) -> list[str]:
    """Blocks whose dilation breaks the rule on an input of this short side (module docstring)."""
    k = cfg.MODEL.DINAT.KERNEL_SIZE
    out = []
    for i, (side, level) in enumerate(zip(level_sides(short_side, 4), cfg.MODEL.DINAT.DILATIONS)):
        for j, d in enumerate(level):
            if relaxed:
                ok, need = side // d >= 1, f"{side} // {d} >= 1"
            elif side >= k:
                ok, need = side // d >= k, f"{side} // {d} >= kernel {k}"
            else:  # narrower than the kernel at any dilation: padded; d = 1 pads least
                ok, need = d == 1, f"dilation 1 on a {side}-wide map narrower than kernel {k}"
            if not ok:
                out.append(f"level {i} block {j}: dilation {d} at side {side}, needs {need}")
    return out


def train_short_side(cfg: CfgNode) -> int:
    """Short side of the training inputs: the LSJ crop, the absolute crop, or the resize."""
    if cfg.INPUT.DATASET_MAPPER_NAME in LSJ_MAPPERS:
        return cfg.INPUT.IMAGE_SIZE
    if cfg.INPUT.CROP.ENABLED:
        assert cfg.INPUT.CROP.TYPE == "absolute", "the configs crop in absolute pixels"
        return min(cfg.INPUT.CROP.SIZE)
    return min(cfg.INPUT.MIN_SIZE_TRAIN)


def is_paper_schedule(cfg: CfgNode) -> bool:
    return cfg.MODEL.DINAT.KERNEL_SIZE == 11 and cfg.MODEL.DINAT.DILATIONS == MASK2FORMER_K11


# ------------------------------------------------------------------------------------------


def test_configs_were_found():
    assert len(CONFIG_FILES) >= 40, f"expected dataset x task x variant configs: {CONFIG_IDS}"
    for dataset, tasks in {
        "coco": ("instance", "panoptic"),
        "ade20k": ("instance", "panoptic", "semantic"),
        "cityscapes": ("instance", "panoptic", "semantic"),
    }.items():
        for task in tasks:
            folder = CONFIG_ROOT / dataset / f"{task}-segmentation"
            assert list(folder.glob("Base-*.yaml")), f"no Base-*.yaml in {folder}"
            variants = {variant_of(p) for p in folder.glob("dinat/*.yaml")}
            assert variants == set(VARIANTS), f"{folder}/dinat has variants {variants}"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=CONFIG_IDS)
def test_yaml_is_plain_and_bases_exist(path):
    """safe_load-able (no python tags), one backbone spelling (MODEL.DINAT), _BASE_ resolves."""
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict), f"{path}: not a mapping"
    assert "DiNAT" not in raw.get("MODEL", {}), (
        f"{path}: use MODEL.DINAT (one spelling across configs/; MODEL.DiNAT is its alias)"
    )
    if "_BASE_" in raw:
        assert (path.parent / raw["_BASE_"]).is_file(), f"{path}: _BASE_ {raw['_BASE_']} missing"
    else:
        assert path == CONFIG_ROOT / "Base-Mask2Former.yaml", f"{path}: no _BASE_"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=CONFIG_IDS)
def test_merges(path):
    cfg = load_config(path)
    assert cfg.MODEL.BACKBONE.NAME == ("D2TorchvisionSwin" if is_swin(path) else "D2DiNAT")
    assert cfg.MODEL.DiNAT is cfg.MODEL.DINAT, "the alias must survive merging"


@pytest.mark.parametrize("path", DINAT_CONFIG_FILES, ids=DINAT_CONFIG_IDS)
def test_dilation_schedule_shape(path):
    c = load_config(path).MODEL.DINAT
    assert len(c.DEPTHS) == len(c.NUM_HEADS) == len(c.DILATIONS) == 4, (
        f"{path}: DEPTHS {c.DEPTHS}, NUM_HEADS {c.NUM_HEADS}, DILATIONS {c.DILATIONS}"
    )
    for i, (depth, level) in enumerate(zip(c.DEPTHS, c.DILATIONS)):
        assert len(level) == depth, f"{path}: DILATIONS[{i}] = {level} for depth {depth}"
        assert all(isinstance(d, int) and d >= 1 for d in level), f"{path}: DILATIONS[{i}] {level}"
    for i, heads in enumerate(c.NUM_HEADS):  # head dim 32 in every variant
        assert heads * 32 == c.EMBED_DIM * 2**i, f"{path}: level {i} width / heads != 32"
    assert c.KERNEL_SIZE % 2 == 1


@pytest.mark.parametrize("path", DINAT_CONFIG_FILES, ids=DINAT_CONFIG_IDS)
def test_dilations_fit_the_test_size(path):
    cfg = load_config(path)
    side = cfg.INPUT.MIN_SIZE_TEST
    bad = dilation_violations(cfg, side)
    assert not bad, f"{path} at test short side {side}:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", DINAT_CONFIG_FILES, ids=DINAT_CONFIG_IDS)
def test_dilations_fit_the_training_crop(path):
    cfg = load_config(path)
    side = train_short_side(cfg)
    paper = is_paper_schedule(cfg)
    bad = dilation_violations(cfg, side, relaxed=paper)
    assert not bad, f"{path} at training short side {side}:\n" + "\n".join(bad)
    if paper and dilation_violations(cfg, side):
        # the only place the paper's schedule is padded: Cityscapes' 512-high crops
        assert dataset_folder(path) == "cityscapes", f"{path}: paper schedule padded at {side}"


@pytest.mark.parametrize("path", DINAT_CONFIG_FILES, ids=DINAT_CONFIG_IDS)
def test_dilations_at_multi_scale_test_sizes(path):
    cfg = load_config(path)
    if task_of(path) != "semantic":
        return
    for side in cfg.TEST.AUG.MIN_SIZES:
        bad = dilation_violations(cfg, side, relaxed=True)
        assert not bad, f"{path} at TEST.AUG size {side}:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=CONFIG_IDS)
def test_datasets_and_classes(path):
    cfg = load_config(path)
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    unknown = [name for name in names if name not in KNOWN_DATASETS]
    assert not unknown, f"{path}: unknown datasets {unknown}; known: {sorted(KNOWN_DATASETS)}"
    if dataset_folder(path) is None:
        assert not names, f"{path}: the shared base names no dataset"
        return
    assert cfg.DATASETS.TRAIN and cfg.DATASETS.TEST, f"{path}: needs train and test datasets"
    families = {KNOWN_DATASETS[name][0] for name in names}
    assert families == {dataset_folder(path)}, f"{path}: datasets {names} of {families}"
    task = task_of(path)
    for name in names:
        assert task in KNOWN_DATASETS[name][1], f"{path}: {name} has no {task} annotations"
    counts = {KNOWN_DATASETS[name][2] for name in names}
    assert len(counts) == 1
    expected = counts.pop()
    source = "the dataset"
    if expected is None:
        expected, source = builtin_shapes_classes()
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == expected, (
        f"{path}: NUM_CLASSES {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}, {expected} per {source}"
    )


@pytest.mark.parametrize("path", CONFIG_FILES, ids=CONFIG_IDS)
def test_task_mapper_and_flags(path):
    cfg = load_config(path)
    task = task_of(path)
    if task is None:
        return
    assert cfg.INPUT.DATASET_MAPPER_NAME in MAPPERS[task], (
        f"{path}: mapper {cfg.INPUT.DATASET_MAPPER_NAME} for {task}; one of {MAPPERS[task]}"
    )
    t = cfg.MODEL.MASK_FORMER.TEST
    assert (t.SEMANTIC_ON, t.INSTANCE_ON, t.PANOPTIC_ON) == TEST_FLAGS[task], path
    if cfg.INPUT.DATASET_MAPPER_NAME in LSJ_MAPPERS:
        assert (cfg.INPUT.IMAGE_SIZE, cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE) == (1024, 0.1, 2.0)
    elif dataset_folder(path) != "builtin":
        assert cfg.INPUT.CROP.ENABLED and cfg.INPUT.CROP.TYPE == "absolute", path


@pytest.mark.parametrize("path", **by_id(paper_configs()))
def test_mask2former_settings(path):
    cfg = load_config(path)
    expected = dict(MASK2FORMER)
    if is_swin(path):
        del expected["MODEL.BACKBONE.NAME"], expected["MODEL.DINAT.OUT_FEATURES"]
        expected.update(SWIN_BACKBONE)
    bad = mismatches(cfg, expected)
    assert not bad, f"{path}:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", **by_id(paper_configs()))
def test_schedule(path):
    cfg = load_config(path)
    family = dataset_folder(path)
    schedule = PAPER_SCHEDULES[family]
    if family == "coco" and size_of(path) != "large":
        schedule = COCO_50EP  # Mask2Former's for backbones below Large; also the COCO bases
    iters, scheduler, steps = schedule
    assert cfg.SOLVER.MAX_ITER == iters, f"{path}: MAX_ITER {cfg.SOLVER.MAX_ITER}"
    assert cfg.SOLVER.LR_SCHEDULER_NAME == scheduler, path
    if steps is not None:
        assert tuple(cfg.SOLVER.STEPS) == steps, f"{path}: STEPS {cfg.SOLVER.STEPS}"


@pytest.mark.parametrize("path", **by_id(paper_configs()))
def test_device_untouched(path):
    cfg = load_config(path)
    default = default_cfg()
    for key in ("MODEL.DEVICE", "MODEL.BACKBONE.FREEZE_AT", "SEED", "CUDNN_BENCHMARK"):
        assert lookup(cfg, key) == lookup(default, key), f"{path}: {key} changed"


@pytest.mark.parametrize(
    "path",
    [p for p in CONFIG_FILES if variant_of(p)],
    ids=[i for p, i in zip(CONFIG_FILES, CONFIG_IDS) if variant_of(p)],
)
def test_variant_matches_dinat_py(path):
    """Widths, depths, heads, MLP ratio and layer scale are dinat.py's VARIANTS."""
    variant = variant_of(path)
    assert variant in VARIANTS, f"{path}: unknown variant {variant}"
    expected = VARIANTS[variant]
    c = load_config(path).MODEL.DINAT
    assert c.EMBED_DIM == expected.embed_dim and list(c.DEPTHS) == list(expected.depths), path
    assert list(c.NUM_HEADS) == list(expected.num_heads), path
    assert c.MLP_RATIO == expected.mlp_ratio, path
    assert c.LAYER_SCALE == expected.layer_scale, f"{path}: LAYER_SCALE {c.LAYER_SCALE}"
    if dataset_folder(path) == "builtin":
        return
    if variant == "large":
        assert c.KERNEL_SIZE == 11, f"{path}: the paper's DiNAT-L uses kernel 11"
        assert c.DILATIONS == MASK2FORMER_K11, f"{path}: not the paper's Mask2Former dilations"
        assert c.DROP_PATH_RATE == 0.3
    else:
        assert c.KERNEL_SIZE == 7, path
        schedule = IMAGENET_224_K7["mini" if variant == "mini" else "deep"]
        assert c.DILATIONS == schedule, f"{path}: not the ImageNet-224 schedule of {variant}"
        assert c.DROP_PATH_RATE == expected.drop_path_rate
    assert load_config(path).MODEL.WEIGHTS.endswith(".pth"), (
        f"{path}: tools/convert_pretrained.py writes torch files (.pth)"
    )


@pytest.mark.parametrize(
    "path",
    [p for p in paper_configs() if size_of(p)],
    ids=config_ids(p for p in paper_configs() if size_of(p)),
)
def test_queries_and_inputs(path):
    cfg = load_config(path)
    family, task, variant = dataset_folder(path), task_of(path), size_of(path)
    large_thing_task = variant == "large" and task in ("panoptic", "instance")
    queries = 200 if large_thing_task else 100
    assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == queries, path
    if family in PAPER_INPUTS:
        crop, test_size, scale = PAPER_INPUTS[family]
        if family == "ade20k" and task == "semantic" and variant != "large":
            crop, test_size, scale = [512, 512], 512, 512  # Mask2Former's setting below Large
        assert list(cfg.INPUT.CROP.SIZE) == crop and cfg.INPUT.MIN_SIZE_TEST == test_size, path
        sizes = [int(x * 0.1 * scale) for x in range(5, 21)]
        assert list(cfg.INPUT.MIN_SIZE_TRAIN) == sizes, f"{path}: {cfg.INPUT.MIN_SIZE_TRAIN}"


def test_swin_configs_were_found():
    names = {p.name for p in SWIN_CONFIG_FILES}
    assert {
        "maskformer2_tvswin_tiny_bs16_160k_res512.yaml",
        "maskformer2_tvswin_large_bs16_100ep.yaml",
    } <= names


@pytest.mark.parametrize("path", **by_id(SWIN_CONFIG_FILES))
def test_swin_variant(path):
    """The size word of the file name is the MODEL.TVSWIN variant and window; the file sets
    no MODEL.DINAT keys (that node is unused there) and downloads nothing by default."""
    raw = yaml.safe_load(path.read_text())
    assert not {"DINAT", "DiNAT"} & set(raw["MODEL"]), f"{path}: sets DiNAT keys"
    c = load_config(path).MODEL.TVSWIN
    variant, window = SWIN_SIZES[size_of(path)]
    assert (c.VARIANT, c.WINDOW_SIZE) == (variant, window), f"{path}: {c.VARIANT}, {c.WINDOW_SIZE}"
    assert c.WEIGHTS_IMAGENET == "", f"{path}: WEIGHTS_IMAGENET downloads; leave it to opts"


def test_builtin_config():
    path = CONFIG_ROOT / "builtin" / "maskformer2_dinat_mini_builtin_shapes.yaml"
    cfg = load_config(path)
    bad = mismatches(cfg, BUILTIN)
    assert not bad, f"{path}:\n" + "\n".join(bad)
    t = cfg.MODEL.MASK_FORMER.TEST
    assert t.SEMANTIC_ON and t.INSTANCE_ON and t.PANOPTIC_ON
    # GroupNorm(32, C) needs C divisible by 32
    assert cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM % 32 == 0 and cfg.MODEL.SEM_SEG_HEAD.MASK_DIM % 32 == 0


def test_builtin_device_only_there():
    for path in CONFIG_FILES:
        text = path.read_text()
        if dataset_folder(path) != "builtin":
            assert not re.search(r"^\s*DEVICE:", text, re.M), f"{path} sets MODEL.DEVICE"


def test_readme_lists_every_config():
    readme = (CONFIG_ROOT / "README.md").read_text()
    missing = [i for p, i in zip(CONFIG_FILES, CONFIG_IDS) if variant_of(p) and i not in readme]
    assert not missing, f"configs/README.md lacks {missing}"


def _one_config_per_backbone() -> list[Path]:
    chosen: dict[str, Path] = {}
    for path in CONFIG_FILES:
        variant = variant_of(path)
        if variant:
            key = "builtin" if dataset_folder(path) == "builtin" else variant
            chosen.setdefault(key, path)
        elif is_swin(path):
            chosen.setdefault(f"swin-{size_of(path)}", path)
    return sorted(chosen.values())


@pytest.mark.parametrize("path", **by_id(_one_config_per_backbone()))
def test_backbone_builds(path):
    """The merged MODEL.DINAT (MODEL.TVSWIN) node builds the backbone with the widths the head
    expects."""
    import torch
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_backbone

    import dinat_m2f.modeling  # noqa: F401  (registers D2DiNAT)

    cfg = load_config(path).clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    shapes = backbone.output_shape()
    assert list(shapes) == list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES)
    if is_swin(path):
        from dinat_m2f.modeling.backbone.torchvision_swin import SWIN_VARIANTS

        embed_dim = SWIN_VARIANTS[cfg.MODEL.TVSWIN.VARIANT].embed_dim
    else:
        embed_dim = cfg.MODEL.DINAT.EMBED_DIM
    for i, name in enumerate(shapes):
        assert shapes[name].channels == embed_dim * 2**i
        assert shapes[name].stride == 4 * 2**i
    if dataset_folder(path) == "builtin":  # cheap enough to run at its input size
        height, width = cfg.INPUT.MIN_SIZE_TRAIN[0], cfg.INPUT.MAX_SIZE_TEST
        with torch.no_grad():
            out = backbone.eval()(torch.randn(1, 3, height, width))
        for i, name in enumerate(shapes):
            assert out[name].shape == (
                1,
                shapes[name].channels,
                height // 4 // 2**i,
                width // 4 // 2**i,
            )
