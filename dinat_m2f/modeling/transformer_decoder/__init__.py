"""Mask2Former transformer decoders (TRANSFORMER_DECODER_REGISTRY)."""

from .mask2former_transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    MultiScaleMaskedTransformerDecoder,
    build_transformer_decoder,
)

__all__ = [
    "TRANSFORMER_DECODER_REGISTRY",
    "MultiScaleMaskedTransformerDecoder",
    "build_transformer_decoder",
]
