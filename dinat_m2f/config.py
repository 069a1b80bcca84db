"""detectron2 config keys of the project.

The functions that the official training scripts call exist here with the same names, keys
and defaults, so the YAML files of those projects merge unchanged and build the same models:

- `add_deeplab_config`: detectron2's `projects/DeepLab` keys (Mask2Former's train_net.py adds
  them "for poly lr schedule"; its YAML files set `MODEL.RESNETS.STEM_TYPE` and
  `RES5_MULTI_GRID`);
- `add_maskformer2_config`: Mask2Former's `mask2former/config.py` (including `MODEL.SWIN`, the
  Swin backbone `D2SwinTransformer`), plus a few keys of this project, marked "(ours)";
- `add_dinat_config`: `MODEL.DINAT` of the DiNAT release's `mask2former/train_m2f.py` (defaults:
  DiNAT-L at kernel 7 without dilations), plus LAYER_SCALE, FROZEN_STAGES, USE_CHECKPOINT;
- `add_tvswin_config`: `MODEL.TVSWIN`, this project's torchvision Swin baseline
  (`D2TorchvisionSwin`);
- `add_detection_config`: what the DiNAT detection release's R-CNN recipe needs beyond
  detectron2's own keys.

`default_cfg()` is detectron2's defaults with all of them: what `train_net.py`, the demo and
the tools merge YAML files into. Defaults that a config relies on are exactly the official
ones (tests/configs/test_official_configs.py holds the table, with the file each one comes
from); this project's own configs set every backbone key they need.
"""

from __future__ import annotations

from typing import Any

from detectron2.config import CfgNode as CN

__all__ = [
    "add_deeplab_config",
    "add_dinat_config",
    "add_maskformer2_config",
    "add_tvswin_config",
    "default_cfg",
]


def _set_default(node: CN, key: str, value: Any) -> None:
    """node.key = value unless the key is already there (keeps what another add_* set)."""
    if key not in node:
        setattr(node, key, value)


def add_deeplab_config(cfg: CN) -> None:
    """Adds detectron2's DeepLab keys (`detectron2/projects/DeepLab/deeplab/config.py`), with
    its defaults. This project reads only the poly-LR keys; the others exist so that YAML files
    written for Mask2Former (which set e.g. `MODEL.RESNETS.STEM_TYPE: "basic"  # not used`)
    merge."""
    # semantic crops are re-drawn (up to 10 times) while one class covers more than this fraction
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # LR_SCHEDULER_NAME "WarmupPolyLR": lr * max((1 - iter / MAX_ITER) ** POWER, CONSTANT_ENDING)
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0
    # DeepLab's semantic head (not used here): loss, projection of low-level features, ASPP
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "hard_pixel_mining"
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_FEATURES = ["res2"]
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS = [48]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS = 256
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DILATIONS = [6, 12, 18]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DROPOUT = 0.1
    cfg.MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV = False
    # DeepLab's ResNet (not used: detectron2's build_resnet_backbone ignores these three)
    cfg.MODEL.RESNETS.RES4_DILATION = 1
    cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 2, 4]
    cfg.MODEL.RESNETS.STEM_TYPE = "deeplab"  # "basic" or "deeplab"


def add_maskformer2_config(cfg: CN) -> None:
    """Adds Mask2Former's keys (`mask2former/config.py`) with its defaults, and this project's
    extra keys (marked "(ours)").

    Defaults are Mask2Former's even where they do not build a Mask2Former model on their own
    (TRANSFORMER_IN_FEATURE "res5", PIXEL_DECODER_NAME "BasePixelDecoder": every Mask2Former
    config sets both); the paper's values live in the YAML files under configs/.
    """
    # --- data -----------------------------------------------------------------------------
    # which mapper turns dataset dicts into model inputs: "mask_former_semantic",
    # "mask_former_instance", "mask_former_panoptic", "coco_instance_lsj", "coco_panoptic_lsj"
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    cfg.INPUT.COLOR_AUG_SSD = False  # photometric distortion of the SSD paper (semantic mappers)
    # semantic crops are re-drawn (up to 10 times) while one class covers more than this fraction
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    cfg.INPUT.SIZE_DIVISIBILITY = -1  # pad crops to this multiple in the mapper (-1: no padding)
    # large-scale jitter (COCO "new baseline" mappers): resize to IMAGE_SIZE * U(MIN, MAX), crop
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0
    # (ours) a sample whose image or annotation file is missing or cannot be decoded: False stops
    # training / evaluation with the file and the dataset named; True skips it (each one
    # logged with a running count; evaluation metrics then leave it out)
    cfg.DATALOADER.SKIP_BROKEN_SAMPLES = False
    # ... but more than this fraction of a dataset's samples broken (at least 1 is allowed)
    # is still an error, so that a fully broken dataset fails; must be < 1
    cfg.DATALOADER.MAX_BROKEN_FRACTION = 0.01

    # --- solver ---------------------------------------------------------------------------
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0  # weight decay of embeddings (queries, level embeds)
    cfg.SOLVER.OPTIMIZER = "ADAMW"  # "ADAMW" or "SGD"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1  # learning-rate factor of the backbone's parameters
    # SOLVER.CLIP_GRADIENTS.CLIP_TYPE also accepts "full_model": one norm over all parameters
    # (ours) weight decay of position embeddings and relative positional biases of the backbone
    cfg.SOLVER.WEIGHT_DECAY_POSITION = 0.0
    # (ours) dtype of SOLVER.AMP.ENABLED: "float16" or "bfloat16"
    cfg.SOLVER.AMP.PRECISION = "float16"
    # the poly schedule's keys belong to add_deeplab_config (Mask2Former's train_net.py calls
    # both); added here too when missing, so add_maskformer2_config alone can train
    _set_default(cfg.SOLVER, "POLY_LR_POWER", 0.9)
    _set_default(cfg.SOLVER, "POLY_LR_CONSTANT_ENDING", 0.0)

    # --- Mask2Former ----------------------------------------------------------------------
    cfg.MODEL.MASK_FORMER = CN()
    mf = cfg.MODEL.MASK_FORMER
    mf.DEEP_SUPERVISION = True  # losses on every decoder layer's predictions (auxiliary)
    mf.NO_OBJECT_WEIGHT = 0.1  # class weight of "no object" in the classification loss
    mf.CLASS_WEIGHT = 1.0  # weight of the classification loss (and matching cost)
    mf.DICE_WEIGHT = 1.0  # weight of the dice loss (and matching cost)
    mf.MASK_WEIGHT = 20.0  # weight of the sigmoid cross-entropy mask loss (and matching cost)
    # attention heads of the transformer decoder and (as in Mask2Former) of the pixel
    # decoder's deformable encoder
    mf.NHEADS = 8
    # dropout of the pixel decoder's deformable encoder; the transformer decoder has none
    # (Mask2Former hard-codes 0.0 there)
    mf.DROPOUT = 0.1
    mf.DIM_FEEDFORWARD = 2048  # FFN width of the transformer decoder
    mf.ENC_LAYERS = 0  # unused by the multi-scale decoder (kept for Mask2Former's YAML files)
    mf.DEC_LAYERS = 6  # 1 + number of decoder layers (the first prediction uses no layer)
    mf.PRE_NORM = False  # pre-norm instead of post-norm decoder layers
    mf.HIDDEN_DIM = 256  # width of the queries and of the decoder
    mf.NUM_OBJECT_QUERIES = 100  # number of queries (mask predictions per image)
    # what the decoder reads; MultiScaleMaskedTransformerDecoder needs
    # "multi_scale_pixel_decoder" (the pixel decoder's multi-scale maps)
    mf.TRANSFORMER_IN_FEATURE = "res5"
    mf.ENFORCE_INPUT_PROJ = False  # 1x1 projection even when widths already match

    mf.TEST = CN()
    mf.TEST.SEMANTIC_ON = True  # output "sem_seg"
    mf.TEST.INSTANCE_ON = False  # output "instances"
    mf.TEST.PANOPTIC_ON = False  # output "panoptic_seg"
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.0  # panoptic: drop queries whose class score is below
    mf.TEST.OVERLAP_THRESHOLD = 0.0  # panoptic: drop segments keeping less of their mask
    # resize mask logits to the input size before (True) or after (False) combining them
    mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False
    # instance results per image: TEST.DETECTIONS_PER_IMAGE (detectron2's key, default 100)

    # pad batched images to this multiple; negative: the backbone's size_divisibility (0 pads
    # nothing, as in Mask2Former)
    mf.SIZE_DIVISIBILITY = 32

    # --- pixel decoder (MODEL.SEM_SEG_HEAD also has detectron2's NUM_CLASSES, IN_FEATURES,
    # IGNORE_VALUE, CONVS_DIM, COMMON_STRIDE, NORM, LOSS_WEIGHT) ---------------------------
    head = cfg.MODEL.SEM_SEG_HEAD
    head.MASK_DIM = 256  # channels of the per-pixel mask features
    head.TRANSFORMER_ENC_LAYERS = 0  # deformable encoder layers (6 in the paper's configs)
    # registered pixel decoders: "MSDeformAttnPixelDecoder" (Mask2Former's configs set it)
    head.PIXEL_DECODER_NAME = "BasePixelDecoder"

    # --- Swin backbone (D2SwinTransformer: the Swin release's parameter names) -----------
    cfg.MODEL.SWIN = CN()
    sw = cfg.MODEL.SWIN
    sw.PRETRAIN_IMG_SIZE = 224  # sets the absolute position embedding's size (APE only)
    sw.PATCH_SIZE = 4  # patch embedding stride (level 0 is at stride PATCH_SIZE)
    sw.EMBED_DIM = 96  # width of level 0; level i has EMBED_DIM * 2**i
    sw.DEPTHS = [2, 2, 6, 2]  # blocks per level
    sw.NUM_HEADS = [3, 6, 12, 24]  # heads per level
    sw.WINDOW_SIZE = 7  # attention window side (12 for the 384 px ImageNet-22K checkpoints)
    sw.MLP_RATIO = 4.0  # MLP hidden width / block width
    sw.QKV_BIAS = True  # bias in the qkv projection
    sw.QK_SCALE = None  # attention logit scale; None = head_dim ** -0.5
    sw.DROP_RATE = 0.0  # dropout after the embedding, projections and in the MLP
    sw.ATTN_DROP_RATE = 0.0  # dropout on attention weights
    sw.DROP_PATH_RATE = 0.3  # stochastic depth, linear over all blocks up to this rate
    sw.APE = False  # learned absolute position embedding after the patch embedding
    sw.PATCH_NORM = True  # LayerNorm after the patch embedding
    sw.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # levels returned (strides 4..32)
    sw.USE_CHECKPOINT = False  # activation checkpointing per block (less training memory)

    # --- Mask2Former's additions to MaskFormer's keys --------------------------------------
    mf.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    # large-scale jitter (set again, as Mask2Former does)
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0
    # the backbone levels the deformable encoder reads
    head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4  # sampling points per head and level
    # declared by Mask2Former but read by neither Mask2Former nor this project: the encoder's
    # heads are MODEL.MASK_FORMER.NHEADS
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8
    # (ours) FFN width of the deformable encoder (Mask2Former hard-codes 1024)
    head.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 1024
    # point-sampled mask losses: points per mask, oversampling, share of uncertain points
    mf.TRAIN_NUM_POINTS = 112 * 112
    mf.OVERSAMPLE_RATIO = 3.0
    mf.IMPORTANCE_SAMPLE_RATIO = 0.75


def add_dinat_config(cfg: CN) -> None:
    """Adds MODEL.DINAT, the D2DiNAT backbone, with the DiNAT release's defaults (DiNAT-L's
    widths, depths, heads and MLP ratio, kernel 7, no dilations); LAYER_SCALE, FROZEN_STAGES
    and USE_CHECKPOINT are ours, with defaults that change nothing.

    The node is also reachable as MODEL.DiNAT: both names are the same node, so YAML files in
    either spelling merge into it.
    """
    cfg.MODEL.DINAT = CN()
    c = cfg.MODEL.DINAT
    c.EMBED_DIM = 192  # width of level 0; level i has EMBED_DIM * 2**i
    c.DEPTHS = [3, 4, 18, 5]  # blocks per level
    c.NUM_HEADS = [6, 12, 24, 48]  # heads per level (head dim 32 in the paper's variants)
    c.KERNEL_SIZE = 7  # neighborhood size (odd; 11 for the Mask2Former Large models)
    # one dilation per block per level, e.g. [[1, 14, 1], [1, 4, 1, 7], ...]; None: all 1 (NAT).
    # Can be changed at test time without retraining: no parameter depends on it.
    c.DILATIONS = None
    c.MLP_RATIO = 2.0  # MLP hidden width / block width
    c.QKV_BIAS = True  # bias in the qkv projection
    c.QK_SCALE = None  # attention logit scale; None = head_dim ** -0.5
    c.DROP_RATE = 0.0  # dropout after projections and in the MLP
    c.ATTN_DROP_RATE = 0.0  # dropout on attention weights
    c.DROP_PATH_RATE = 0.3  # stochastic depth, linear over all blocks up to this rate
    c.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # levels returned (strides 4..32)
    # (ours) initial layer-scale gamma (1e-5 for DiNAT-Base), None = no layer scale
    c.LAYER_SCALE = None
    # (ours) numbered as in the DiNAT release (and Swin): -1 none; 0 or 1 the tokenizer;
    # k >= 2 also levels 0..k-2 (each with the downsampler that ends it)
    c.FROZEN_STAGES = -1
    c.USE_CHECKPOINT = False  # (ours) activation checkpointing per block (less memory)
    cfg.MODEL.DiNAT = c


def add_tvswin_config(cfg: CN) -> None:
    """Adds MODEL.TVSWIN, this project's torchvision Swin baseline (defaults: Swin-T,
    torchvision's ImageNet-1K architecture, random init). Mask2Former's Swin is MODEL.SWIN
    (`add_maskformer2_config`).

    Set MODEL.BACKBONE.NAME "D2TorchvisionSwin" to use it. Idempotent: a second call keeps the
    node already there (and whatever was merged into it).
    """
    if "TVSWIN" in cfg.MODEL:
        return
    cfg.MODEL.TVSWIN = CN()
    c = cfg.MODEL.TVSWIN
    # "swin_t" / "swin_s" / "swin_b" (torchvision's), "swin_l" (Swin-L's hyperparameters on
    # torchvision's SwinTransformer: no torchvision weights), or "swin_v2_t" / "swin_v2_s" /
    # "swin_v2_b" (Swin V2 blocks and patch merging)
    c.VARIANT = "swin_t"
    # attention window side; 0 = the variant's (7 for V1 and swin_l, 8 for V2). Mask2Former's
    # Swin-L uses 12 (the ImageNet-22K 384 px checkpoint); the RPB tables' shape depends on it
    c.WINDOW_SIZE = 0
    c.DROP_PATH_RATE = 0.3  # stochastic depth, linear over all blocks up to this rate
    c.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # levels returned (strides 4..32)
    # torchvision weights enum member for the backbone, e.g. "IMAGENET1K_V1" or "DEFAULT"
    # ("" = random init). Loading downloads the file (or reads torch hub's cache); MODEL.WEIGHTS
    # (a detectron2 checkpoint, `backbone.features.*` keys) is loaded afterwards and wins
    c.WEIGHTS_IMAGENET = ""


def add_detection_config(cfg: CN) -> None:
    """Adds what the DiNAT detection release's recipe needs beyond detectron2's own R-CNN keys
    (MODEL.RPN, ROI_HEADS, ROI_BOX_HEAD, ROI_BOX_CASCADE_HEAD, ROI_MASK_HEAD, FPN):
    INPUT.DETR_CROP and MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS."""
    # The multi-scale training of the DiNAT / Swin detection releases (from DETR): after the
    # horizontal flip, with probability PROB resize the short side to one of MIN_SIZE (long
    # side <= INPUT.MAX_SIZE_TRAIN) and take a random crop of TYPE / SIZE (detectron2's
    # RandomCrop); then, in both cases, the usual INPUT.MIN_SIZE_TRAIN resize. Read by the
    # "detectron2_instance" dataset mapper.
    cfg.INPUT.DETR_CROP = CN()
    c = cfg.INPUT.DETR_CROP
    c.ENABLED = False  # off: only detectron2's resize and flip (and INPUT.CROP if enabled)
    c.PROB = 0.5  # chance of the resize-and-crop branch (the release picks 1 of 2 policies)
    c.MIN_SIZE = (400, 500, 600)  # short side before the crop, one chosen at random
    c.TYPE = "absolute_range"  # detectron2 RandomCrop type
    c.SIZE = [384, 600]  # absolute_range: crop height and width each in [384, 600] px

    # Cascade R-CNN ("StageMaskCascadeROIHeads" only): weight of each stage's box and mask
    # losses, one per MODEL.ROI_BOX_CASCADE_HEAD.IOUS entry (the Cascade R-CNN paper's and
    # mmdetection's 1, 0.5, 0.25).
    cfg.MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS = [1.0, 0.5, 0.25]


def default_cfg() -> CN:
    """detectron2's defaults plus every key above, added in the official order
    (add_deeplab_config, add_maskformer2_config, add_dinat_config), then MODEL.TVSWIN and
    the detectors' keys."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    add_dinat_config(cfg)
    add_tvswin_config(cfg)
    add_detection_config(cfg)
    return cfg
