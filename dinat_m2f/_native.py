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
        "neighborhood attention falls back to the pure-PyTorch implementation, which is slower "
        "and uses k*k times more memory. Build it with `make setup` or "
        "`pip install -e . --no-build-isolation`."
    )
    if _flag(REQUIRE_ENV):
        raise ImportError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=2)


def _compiled_backends() -> tuple[str, ...]:
    if not NATIVE_AVAILABLE:
        return ()
    return tuple(
        key
        for key in ("CPU", "CUDA")
        if torch._C._dispatch_has_kernel_for_dispatch_key("dinat_m2f::na_qk", key)
    )


# Read once: a constant that torch.compile can trace through without a graph break.
_NATIVE_BACKENDS = _compiled_backends()


def native_backends() -> tuple[str, ...]:
    """Dispatch keys ("CPU", "CUDA") for which the native NA kernels are compiled."""
    return _NATIVE_BACKENDS


def native_supports(device: torch.device) -> bool:
    """Whether the native kernels run on tensors of `device`."""
    return device.type.upper() in _NATIVE_BACKENDS


_warned_devices: set[str] = set()


def warn_fallback_once(device: torch.device) -> None:
    """One warning per device type whose tensors run on the pure-PyTorch path although the
    extension is loaded (e.g. CUDA tensors with a CPU-only build)."""
    if NATIVE_AVAILABLE and device.type not in _warned_devices:
        _warned_devices.add(device.type)
        warnings.warn(
            f"dinat_m2f: the native kernels are not built for {device.type} tensors (built: "
            f"{', '.join(_NATIVE_BACKENDS) or 'none'}); using the pure-PyTorch implementation. "
            "Rebuild with a CUDA toolkit visible (CUDA_HOME) for GPU kernels.",
            RuntimeWarning,
            stacklevel=3,
        )


# The ops' fake kernels and autograd formulas are registered as soon as the library is
# loaded, whichever module loaded it (last, so that module sees this one's names).
if NATIVE_AVAILABLE:
    importlib.import_module("dinat_m2f.layers.na_native")
