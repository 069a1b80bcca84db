"""DiNAT (Dilated Neighborhood Attention Transformer) with Mask2Former for detectron2."""

__version__ = "0.1.0"
