"""Config keys of the torchvision Swin Transformer backbone (`D2TorchvisionSwin`): MODEL.TVSWIN.

Kept apart from dinat_m2f/config.py so the Swin baseline adds one node and nothing else;
`dinat_m2f.engine.setup.load_cfg` applies it after the project's own keys.
"""

from __future__ import annotations

from detectron2.config import CfgNode as CN


def add_swin_config(cfg: CN) -> None:
    """Adds MODEL.TVSWIN (defaults: Swin-T, torchvision's ImageNet-1K architecture, random init).

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
