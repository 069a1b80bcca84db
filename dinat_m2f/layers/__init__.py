"""Neighborhood-attention and multi-scale deformable attention as public functions (with
argument checks) and modules, built on dinat_m2f.ops; DropPath."""

from ..ops.library import NATIVE_AVAILABLE, native_backends
from .drop_path import DropPath

# After the line above: `dinat_m2f.layers.ms_deform_attn` is the function below, not the
# submodule of that name (import MSDeformAttn from the package or with `from ... import`).
from .ms_deform_attn import MSDeformAttn, ms_deform_attn
from .na import na1d, na1d_av, na1d_qk, na2d, na2d_av, na2d_qk
from .neighborhood_attention import NeighborhoodAttention2D


def native_available() -> bool:
    """Whether the compiled kernels (dinat_m2f._C) are loaded."""
    return NATIVE_AVAILABLE


__all__ = [
    "DropPath",
    "MSDeformAttn",
    "NeighborhoodAttention2D",
    "ms_deform_attn",
    "na1d",
    "na1d_av",
    "na1d_qk",
    "na2d",
    "na2d_av",
    "na2d_qk",
    "native_available",
    "native_backends",
]
