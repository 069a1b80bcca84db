"""The ops layer: loads the native library `dinat_m2f._C`, says which backends exist, and
registers each op family's fake kernels, autograd and implementations.

    library          loading, native_backends(), fallback warnings
    na/              neighborhood attention: checks, pure-PyTorch twin, registration, dispatch
    ms_deform_attn/  multi-scale deformable attention: the same parts

`dinat_m2f.layers` (public functions with checks, modules) builds on this package; nothing
here imports it back.
"""

from . import ms_deform_attn, na
from .library import NATIVE_AVAILABLE, native_backends, native_supports

__all__ = ["NATIVE_AVAILABLE", "ms_deform_attn", "na", "native_backends", "native_supports"]
