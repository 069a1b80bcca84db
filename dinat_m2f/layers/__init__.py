"""Neighborhood-attention ops and modules."""

from .._native import NATIVE_AVAILABLE, native_backends
from .drop_path import DropPath
from .na_functional import na1d, na1d_av, na1d_qk, na2d, na2d_av, na2d_qk
from .neighborhood_attention import NeighborhoodAttention2D


def native_available() -> bool:
    """Whether the compiled kernels (dinat_m2f._C) are loaded."""
    return NATIVE_AVAILABLE


__all__ = [
    "DropPath",
    "NeighborhoodAttention2D",
    "na1d",
    "na1d_av",
    "na1d_qk",
    "na2d",
    "na2d_av",
    "na2d_qk",
    "native_available",
    "native_backends",
]
