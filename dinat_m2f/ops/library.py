"""Loads the compiled library `dinat_m2f._C` once and says which backends it provides.

Set `DINAT_M2F_DISABLE_NATIVE=1` to force the pure-PyTorch implementations, or
`DINAT_M2F_REQUIRE_NATIVE=1` to make a missing build an import error instead of a warning.
This module imports nothing else of the package: every op family builds on it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Iterator

import torch

DISABLE_ENV = "DINAT_M2F_DISABLE_NATIVE"
REQUIRE_ENV = "DINAT_M2F_REQUIRE_NATIVE"


def env_flag(name: str) -> bool:
    """Whether the environment variable `name` is set to a true value (not "", 0, false, no)."""
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no")


def _load() -> tuple[bool, str]:
    if env_flag(DISABLE_ENV):
        return False, f"disabled by {DISABLE_ENV}=1"
    try:
        importlib.import_module("dinat_m2f._C")
    except ImportError as error:
        return False, str(error)
    return True, ""


NATIVE_AVAILABLE, UNAVAILABLE_REASON = _load()

if not NATIVE_AVAILABLE and not env_flag(DISABLE_ENV):
    _message = (
        f"dinat_m2f: the native extension dinat_m2f._C could not be loaded ({UNAVAILABLE_REASON}); "
        "neighborhood attention and multi-scale deformable attention fall back to their "
        "pure-PyTorch implementations, which are slower and use more memory (k*k times for "
        "neighborhood attention). Build it with `make setup` or "
        "`pip install -e . --no-build-isolation`."
    )
    if env_flag(REQUIRE_ENV):
        raise ImportError(_message)
    warnings.warn(_message, RuntimeWarning, stacklevel=2)


def _compiled_devices(op: str) -> tuple[str, ...]:
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


# Op families, their names in messages, and the device dispatch keys their native kernels are
# built for (not the `backend=` of na1d / na2d: ops/na/dispatch.py). Read once: constants that
# torch.compile traces through without a graph break.
FAMILIES = {"na": "neighborhood-attention", "ms_deform_attn": "multi-scale deformable attention"}
NATIVE_DEVICES = {
    "na": _compiled_devices("na_qk"),
    "ms_deform_attn": _compiled_devices("ms_deform_attn"),
}


# Device dispatch keys of the fused NA op dinat_m2f::na_fused (CPU only: CUDA tensors take the
# Triton kernels of ops/na/fused.py).
FUSED_NA_DEVICES = _compiled_devices("na_fused")


def _family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    return family


def native_backends(family: str = "na") -> tuple[str, ...]:
    """Dispatch keys ("CPU", "CUDA") for which the native kernels of an op family are compiled:
    "na" (the neighborhood-attention ops) or "ms_deform_attn"."""
    return NATIVE_DEVICES[_family(family)]


def native_supports(device: torch.device, family: str = "na") -> bool:
    """Whether the native kernels of `family` (see native_backends) run on tensors of `device`."""
    return device.type.upper() in NATIVE_DEVICES[_family(family)]


# The torch library whose ops compute native calls: dinat_m2f, or inside use_native_library()
# another library with the same schemas (the test extension's emulated device, which only the
# tests load: tests/emulated_device.py).
LIBRARY = "dinat_m2f"
_library = LIBRARY


def native_ops():
    """The ops that compute native calls: torch.ops.dinat_m2f, or inside use_native_library()
    the library it names."""
    return getattr(torch.ops, _library)


def other_library_in_use() -> bool:
    """Whether native calls go to another library than dinat_m2f (inside use_native_library():
    the tests' emulated device)."""
    return _library != LIBRARY


@contextlib.contextmanager
def use_native_library(name: str) -> Iterator[None]:
    """Inside the block, native calls run the ops of torch.ops.<name>: a library with the
    schemas of dinat_m2f:: whose fake kernels and autograd are registered (each op family's
    `registration.register_library(name)`). The public functions, their checks and autograd
    are unchanged. The tests run the CUDA kernels on the emulated device this way."""
    global _library
    if not NATIVE_AVAILABLE:
        raise RuntimeError(f"use_native_library({name!r}): dinat_m2f._C is not loaded")
    if not hasattr(getattr(torch.ops, name), "na_qk"):
        raise RuntimeError(
            f"use_native_library({name!r}): no library {name} is loaded (the emulated "
            "device's is the test extension's, which tests/emulated_device.py loads)"
        )
    previous, _library = _library, name
    try:
        yield
    finally:
        _library = previous


_warned: set[tuple[str, str]] = set()


def warn_fallback_once(device: torch.device, family: str = "na") -> None:
    """One warning per (op family, device type) whose tensors run on the pure-PyTorch path
    although the extension is loaded (e.g. CUDA tensors with a CPU-only build)."""
    if NATIVE_AVAILABLE and (family, device.type) not in _warned:
        _warned.add((family, device.type))
        warnings.warn(
            f"dinat_m2f: the native {FAMILIES[family]} kernels are not built for {device.type} "
            f"tensors (built: {', '.join(native_backends(family)) or 'none'}); using the "
            "pure-PyTorch implementation. Rebuild with a CUDA toolkit visible (CUDA_HOME) for "
            "GPU kernels.",
            RuntimeWarning,
            stacklevel=4,
        )


# --- which implementation computed a call (for tests) ------------------------------------------

_recorded: list[str] | None = None


@contextlib.contextmanager
def record_implementations() -> Iterator[list[str]]:
    """Test hook: inside the block, every op call appends to the yielded list the
    implementation that computed it, as "op:implementation": "na:fused", "na:unfused" and
    "na:reference" (the backend of a whole-attention call), then "na_qk:native" /
    "na_av:native" (the extension's kernels), "...:emulated" (inside use_native_library: the
    tests' emulated device) or "...:pure-pytorch" (the twin); likewise "ms_deform_attn:...".
    Outside the block nothing is recorded: one test of a module global per call, which
    torch.compile folds away."""
    global _recorded
    previous, _recorded = _recorded, []
    try:
        yield _recorded
    finally:
        _recorded = previous


def note_implementation(op: str, implementation: str) -> None:
    """Records `op` computed by `implementation` inside record_implementations()."""
    if _recorded is not None:
        _recorded.append(f"{op}:{implementation}")


def native_implementation() -> str:
    """The name note_implementation gives the native kernels: "native", or "emulated" inside
    use_native_library() (the tests' emulated device)."""
    return "native" if _library == LIBRARY else "emulated"
