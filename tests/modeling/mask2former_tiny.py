"""A small DiNAT-Mini + Mask2Former config for tests (fast on a CPU)."""

from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog

from dinat_m2f.config import add_dinat_config, add_maskformer2_config
from tests.conftest import set_dinat_mini

METADATA_NAME = "_test_tiny_mask2former"
NUM_CLASSES = 3  # 0, 1 things, 2 stuff


def tiny_mask2former_cfg():
    if METADATA_NAME not in MetadataCatalog.list():
        MetadataCatalog.get(METADATA_NAME).set(
            thing_classes=["a", "b"],
            stuff_classes=["a", "b", "c"],
            thing_dataset_id_to_contiguous_id={1: 0, 2: 1},
            stuff_dataset_id_to_contiguous_id={1: 0, 2: 1, 3: 2},
        )
    cfg = get_cfg()
    add_dinat_config(cfg)
    add_maskformer2_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "MaskFormer"
    cfg.MODEL.BACKBONE.NAME = "D2DiNAT"
    set_dinat_mini(cfg)
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.280, 103.530]
    cfg.MODEL.PIXEL_STD = [58.395, 57.120, 57.375]
    cfg.MODEL.DINAT.DILATIONS = [[1, 2, 1], [1, 1, 1, 1], [1] * 6, [1] * 5]
    cfg.MODEL.DINAT.DROP_PATH_RATE = 0.0
    head = cfg.MODEL.SEM_SEG_HEAD
    head.NAME = "MaskFormerHead"
    head.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    head.NUM_CLASSES = NUM_CLASSES
    head.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    head.CONVS_DIM = 32
    head.MASK_DIM = 32
    head.NORM = "GN"
    head.COMMON_STRIDE = 4
    head.TRANSFORMER_ENC_LAYERS = 1
    head.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 64
    mf = cfg.MODEL.MASK_FORMER
    mf.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    mf.HIDDEN_DIM = 32
    mf.NHEADS = 4
    mf.DIM_FEEDFORWARD = 64
    mf.DEC_LAYERS = 3  # two decoder layers, three predictions
    mf.NUM_OBJECT_QUERIES = 6
    mf.DROPOUT = 0.0
    mf.TRAIN_NUM_POINTS = 256
    mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT = 2.0, 5.0, 5.0
    mf.TEST.SEMANTIC_ON = mf.TEST.INSTANCE_ON = mf.TEST.PANOPTIC_ON = True
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.0
    mf.TEST.OVERLAP_THRESHOLD = 0.0
    cfg.DATASETS.TRAIN = (METADATA_NAME,)
    cfg.DATASETS.TEST = (METADATA_NAME,)
    cfg.TEST.DETECTIONS_PER_IMAGE = 5
    return cfg
