"""Neighborhood-attention (NA / DiNA) ops: argument checks, the pure-PyTorch twin, the native
ops' fake kernels and autograd, and the choice of implementation per call."""

from . import registration  # noqa: F401  (fake kernels and autograd of dinat_m2f::na_*)
from .dispatch import av, qk

__all__ = ["av", "qk"]
