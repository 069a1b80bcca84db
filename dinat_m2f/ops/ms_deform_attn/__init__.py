"""Multi-scale deformable attention ops: argument checks, the grid_sample twin, the native ops'
fake kernels and autograd, and the choice of implementation per call."""

from . import registration  # noqa: F401  (fake kernels and autograd of dinat_m2f::ms_deform_attn*)
from .dispatch import forward

__all__ = ["forward"]
