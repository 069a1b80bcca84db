"""The emulated device, for the tests: the test extension `dinat_m2f._C_testing` (built beside
`dinat_m2f._C` by setup.py, never imported by the package) holds the library
dinat_m2f_testing, whose ops are the ops users call for CPU tensors, computed by the CUDA
kernels and launch code on CPU threads (native/testing/, docs/emulated_device.md), plus the
tiled NA kernels with a given tile, their launch plan and the launch census.

`load()` imports it once and registers the fake kernels and autograd of its ops;
`use_emulated_device()` routes the native calls of CPU tensors to it.

    python -m tests.emulated_device MODULE [ARGS ...]   # `python -m MODULE ARGS` with the
                                                        # emulated device loaded, e.g.
    python -m tests.emulated_device dinat_m2f.benchmarks.accuracy --device emulated
"""

from __future__ import annotations

import importlib
import runpy
import sys
from contextlib import AbstractContextManager

import torch

from dinat_m2f.ops import library
from dinat_m2f.ops.ms_deform_attn import registration as ms_deform_attn_registration
from dinat_m2f.ops.na import registration as na_registration

LIBRARY = "dinat_m2f_testing"
MODULE = "dinat_m2f._C_testing"

_state: dict[str, object] = {}


def load() -> bool:
    """Loads the test extension and registers its ops, once; False (with the reason in
    `unavailable_reason()`) when it or dinat_m2f._C is not built."""
    if "loaded" in _state:
        return bool(_state["loaded"])
    if not library.NATIVE_AVAILABLE:
        _state.update(loaded=False, reason=f"dinat_m2f._C: {library.UNAVAILABLE_REASON}")
        return False
    try:
        importlib.import_module(MODULE)
    except ImportError as error:
        _state.update(loaded=False, reason=f"{MODULE}: {error}")
        return False
    na_registration.register_library(LIBRARY)
    ms_deform_attn_registration.register_library(LIBRARY)
    _register_tiled()
    _state["loaded"] = True
    return True


def unavailable_reason() -> str:
    return str(_state.get("reason", ""))


def _register_tiled() -> None:
    """Fake kernels of the tiled NA kernels: those of na_qk / na_av (tile and chunk change
    how, not what, they compute)."""
    qk_fake, av_fake = na_registration._na_qk_fake, na_registration._na_av_fake

    @torch.library.register_fake(f"{LIBRARY}::na_qk_tiled")
    def _na_qk_tiled_fake(query, key, rpb, kernel_size, dilation, tile, chunk):
        return qk_fake(query, key, rpb, kernel_size, dilation)

    @torch.library.register_fake(f"{LIBRARY}::na_av_tiled")
    def _na_av_tiled_fake(attn, value, kernel_size, dilation, tile, chunk):
        return av_fake(attn, value, kernel_size, dilation)


def use_emulated_device() -> AbstractContextManager[None]:
    """Inside the block, the native ops of CPU tensors run the CUDA kernels (the very source
    and launch code of the GPU build) on the emulated device of native/common/simt_emulator.h,
    where every thread block is blockDim CPU threads. The public functions, their checks and
    autograd are unchanged."""
    if not load():
        raise RuntimeError(f"the emulated device is not built ({unavailable_reason()})")
    return library.use_native_library(LIBRARY)


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m tests.emulated_device MODULE [ARGS ...]")
    if not load():
        raise SystemExit(f"error: the emulated device is not built ({unavailable_reason()})")
    sys.argv = list(argv)
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
