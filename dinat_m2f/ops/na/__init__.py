"""Neighborhood-attention (NA / DiNA) ops: argument checks, the pure-PyTorch twin, the native
ops' fake kernels and autograd, the fused Triton kernels (registered as
dinat_m2f_triton:: ops), and the choice of implementation per call."""

from . import registration  # noqa: F401  (fake kernels and autograd of dinat_m2f::na_*)
from .dispatch import BACKENDS, attention, av, qk

__all__ = ["BACKENDS", "attention", "av", "qk"]
