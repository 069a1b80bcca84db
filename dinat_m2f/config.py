"""detectron2 config keys of the project (`add_dinat_config`)."""

from detectron2.config import CfgNode as CN


def add_dinat_config(cfg: CN) -> None:
    """Adds MODEL.DINAT (the DiNAT / NAT backbone; defaults: DiNAT-Mini).

    The node is also reachable as MODEL.DiNAT, the spelling of the reference configs: both
    names are the same node, so YAML files in either spelling merge into it.
    """
    cfg.MODEL.DINAT = CN()
    c = cfg.MODEL.DINAT
    c.EMBED_DIM = 64  # width of level 0; level i has EMBED_DIM * 2**i
    c.DEPTHS = [3, 4, 6, 5]  # blocks per level
    c.NUM_HEADS = [2, 4, 8, 16]  # heads per level (head dim 32 in the paper's variants)
    c.KERNEL_SIZE = 7  # neighborhood size (odd; 11 for the Mask2Former Large models)
    # one dilation per block per level; [[1]*d for d in DEPTHS] is NAT. Can be changed at test
    # time without retraining (the paper's Table 12): no parameter depends on it.
    c.DILATIONS = [[1, 8, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2], [1, 1, 1, 1, 1]]
    c.MLP_RATIO = 3.0  # MLP hidden width / block width
    c.QKV_BIAS = True  # bias in the qkv projection
    c.QK_SCALE = None  # attention logit scale; None = head_dim ** -0.5
    c.DROP_RATE = 0.0  # dropout after projections and in the MLP
    c.ATTN_DROP_RATE = 0.0  # dropout on attention weights
    c.DROP_PATH_RATE = 0.2  # stochastic depth, linear over all blocks up to this rate
    c.LAYER_SCALE = None  # initial layer-scale gamma (1e-5 for Base), None = no layer scale
    c.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # levels returned (strides 4..32)
    c.FROZEN_STAGES = -1  # -1 none; 0 the tokenizer; i >= 1 also levels 0..i-1
    c.USE_CHECKPOINT = False  # activation checkpointing per block (less training memory)
    cfg.MODEL.DiNAT = c
