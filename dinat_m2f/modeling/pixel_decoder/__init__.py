"""Pixel decoders (registered in detectron2's SEM_SEG_HEADS_REGISTRY)."""

from .ms_deform_attn_pixel_decoder import MSDeformAttnPixelDecoder, build_pixel_decoder

__all__ = ["MSDeformAttnPixelDecoder", "build_pixel_decoder"]
