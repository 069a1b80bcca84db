"""Loads the compiled library `dinat_m2f._C` once and says what it provides.

Set `DINAT_M2F_DISABLE_NATIVE=1` to force the pure-PyTorch implementation, or
`DINAT_M2F_REQUIRE_NATIVE=1` to make a missing build an import error instead of a warning.
"""

import importlib
import os
import warnings

import torch

DISABLE_ENV = "DINAT_M2F_DISABLE_NATIVE"
REQUIRE_ENV = "DINAT_M2F_REQUIRE_NATIVE"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no")


def _load() -> tuple[bool, str]:
    if _flag(DISABLE_ENV):
        return False, f"disabled by {DISABLE_ENV}=1"
    try:
        importlib.import_module("dinat_m2f._C")
    except ImportError as error:
        return False, str(error)
    return True, ""


NATIVE_AVAILABLE, UNAVAILABLE_REASON = _load()

if not NATIVE_AVAILABLE and not _flag(DISABLE_ENV):
    message = (
        f"dinat_m2f: the native extension dinat_m2f._C could not be loaded ({UNAVAILABLE_REASON}); "
        "neighborhood attention and multi-scale deformable attention fall back to their "
        "pure-PyTorch implementations, which are slower and use more memory (k*k times for "
        "neighborhood attention). Build it with `make setup` or "
        "`pip install -e . --no-build-isolation`."
    )
    if _flag(REQUIRE_ENV):
        raise ImportError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=2)


def _compiled_backends(op: str) -> tuple[str, ...]:
    """Dispatch keys with a kernel for `dinat_m2f::<op>`; none when the op is missing (e.g. a
    stale build from before the op was added)."""
    if not NATIVE_AVAILABLE:
        return ()
    try:
        return tuple(
            key
            for key in ("CPU", "CUDA")
            if torch._C._dispatch_has_kernel_for_dispatch_key(f"dinat_m2f::{op}", key)
        )
    except RuntimeError:  # "operator ... does not exist"
        return ()


# Read once: constants that torch.compile can trace through without a graph break.
_NATIVE_BACKENDS = _compiled_backends("na_qk")  # the neighborhood-attention ops
_MS_DEFORM_ATTN_BACKENDS = _compiled_backends("ms_deform_attn")

# Op families and their names in messages.
_FAMILIES = {"na": "neighborhood-attention", "ms_deform_attn": "multi-scale deformable attention"}


def native_backends(family: str = "na") -> tuple[str, ...]:
    """Dispatch keys ("CPU", "CUDA") for which the native kernels of an op family are compiled:
    "na" (the neighborhood-attention ops) or "ms_deform_attn"."""
    if family == "na":
        return _NATIVE_BACKENDS
    if family == "ms_deform_attn":
        return _MS_DEFORM_ATTN_BACKENDS
    raise ValueError(f"native_backends: family must be one of {sorted(_FAMILIES)}, got {family!r}")


def native_supports(device: torch.device, family: str = "na") -> bool:
    """Whether the native kernels of `family` (see native_backends) run on tensors of `device`."""
    return device.type.upper() in native_backends(family)


_warned: set[tuple[str, str]] = set()


def warn_fallback_once(device: torch.device, family: str = "na") -> None:
    """One warning per (op family, device type) whose tensors run on the pure-PyTorch path
    although the extension is loaded (e.g. CUDA tensors with a CPU-only build)."""
    if NATIVE_AVAILABLE and (family, device.type) not in _warned:
        _warned.add((family, device.type))
        warnings.warn(
            f"dinat_m2f: the native {_FAMILIES[family]} kernels are not built for {device.type} "
            f"tensors (built: {', '.join(native_backends(family)) or 'none'}); using the "
            "pure-PyTorch implementation. Rebuild with a CUDA toolkit visible (CUDA_HOME) for "
            "GPU kernels.",
            RuntimeWarning,
            stacklevel=3,
        )


# The ops' fake kernels and autograd formulas are registered as soon as the library is
# loaded, whichever module loaded it (last, so that module sees this one's names).
if NATIVE_AVAILABLE:
    importlib.import_module("dinat_m2f.layers.na_native")
    importlib.import_module("dinat_m2f.layers.ms_deform_attn_native")
