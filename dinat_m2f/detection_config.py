"""detectron2 config keys of the R-CNN detectors (`add_detection_config`).

Mask R-CNN and Cascade Mask R-CNN use detectron2's own keys (MODEL.RPN, MODEL.ROI_HEADS,
MODEL.ROI_BOX_HEAD, MODEL.ROI_BOX_CASCADE_HEAD, MODEL.ROI_MASK_HEAD, MODEL.FPN); this adds the
few that the DiNAT detection release's recipe needs beyond them. Kept apart from `config.py`
so that the Mask2Former keys and these can change independently.
"""

from detectron2.config import CfgNode as CN


def add_detection_config(cfg: CN) -> None:
    """Adds INPUT.DETR_CROP and MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS."""
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
