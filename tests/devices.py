"""The suite's one device rule: where a test's tensors live and which backends it may run.

Two families of device code, each with the places it can run:

- the CUDA kernels of native/ (`.cu`, NA backend "unfused"; MSDeformAttn): "cuda" on a GPU
  (a build with CUDA kernels), and "emulated", the same kernels and launch code on CPU threads
  (the test extension of tests/emulated_device.py), which runs wherever it is built;
  `cases`, `backends`, `device`, `on`;
- the fused Triton NA kernels (NA backend "fused"): "cuda" on a GPU (compiled), and
  "interpreter", CPU tensors under Triton's interpreter; `fused_devices`.

Triton reads TRITON_INTERPRET when it is first imported, so the choice is made here, on import
(tests/conftest.py imports this module before anything imports dinat_m2f): without a GPU the
interpreter is switched on, unless TRITON_INTERPRET is already set (TRITON_INTERPRET=0 is what a
GPU host sees, and then the interpreter's cases skip by name). Tests ask this module, never the
environment or torch.cuda. The emulated device is slow (every block is 256 threads with real
barriers), so its cases use small shapes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
import torch

GPU = torch.cuda.is_available()
if not GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from dinat_m2f.ops.library import REQUIRE_ENV, env_flag, native_backends  # noqa: E402
from dinat_m2f.ops.na import dispatch, fused  # noqa: E402
from tests import emulated_device  # noqa: E402

# The test extension (the emulated device), loaded here once for the whole suite; a missing one
# fails like a missing dinat_m2f._C when the native build is required (make test).
EMULATED_DEVICE = emulated_device.load()
if not EMULATED_DEVICE and "CPU" in native_backends() and env_flag(REQUIRE_ENV):
    raise ImportError(f"the emulated device is not built: {emulated_device.unavailable_reason()}")

# the CUDA kernels of native/ can run: a GPU and a build with them
CUDA_KERNELS = GPU and "CUDA" in native_backends()
# fused Triton kernels on CPU tensors
INTERPRETER = fused.interpreting()

NO_CUDA = "needs a CUDA GPU and dinat_m2f._C built with CUDA"
NO_INTERPRETER = (
    "needs Triton's interpreter (TRITON_INTERPRET=1; tests/devices.py sets it when there is no "
    "GPU and the variable is unset)"
)
requires_native = pytest.mark.skipif(
    "CPU" not in native_backends(), reason="dinat_m2f._C (native CPU kernels) is not built"
)
requires_emulated_device = pytest.mark.skipif(
    not EMULATED_DEVICE,
    reason=f"dinat_m2f._C_testing (the emulated device) is not built: "
    f"{emulated_device.unavailable_reason()}",
)
requires_interpreter = pytest.mark.skipif(not INTERPRETER, reason=NO_INTERPRETER)

# --- the CUDA kernels of native/: "cuda" and "emulated" ---------------------------------------
BACKENDS = ("cuda", "emulated")


MARKS = {
    "cuda": pytest.mark.cuda,
    "emulated": requires_emulated_device,
    "interpreter": requires_interpreter,
}


def param(backend: str, *values, id: str | None = None):
    """pytest.param(backend, *values) with the backend's skip mark, id "backend[-id]"."""
    return pytest.param(
        backend, *values, marks=MARKS[backend], id=backend if id is None else f"{backend}-{id}"
    )


def cases(cuda_cases, emulated_cases, ids) -> list:
    """pytest params ("backend", case): the real GPU's cases and the emulated device's."""
    return [param("cuda", c, id=ids(c)) for c in cuda_cases] + [
        param("emulated", c, id=ids(c)) for c in emulated_cases
    ]


def backends() -> list:
    """pytest params for tests that take only the backend."""
    return [param(b) for b in BACKENDS]


def device(backend: str) -> torch.device:
    """The device of the backend's tensors ("cuda", or "cpu" for "emulated"/"interpreter")."""
    return torch.device("cuda" if backend == "cuda" else "cpu")


def on(backend: str):
    """Context in which the native ops of `device(backend)` tensors run on that backend."""
    if backend == "emulated":
        return emulated_device.use_emulated_device()
    return contextlib.nullcontext()


# --- the fused Triton kernels: "cuda" and "interpreter" ---------------------------------------


def fused_devices() -> list:
    """pytest params (ids "cuda", "interpreter") of the devices the fused kernels run on; the
    value is the tensors' device type. Exactly one runs in a session: the GPU, or the
    interpreter without one; each skips by name otherwise."""
    return [
        pytest.param("cuda", marks=MARKS["cuda"], id="cuda"),
        pytest.param("cpu", marks=MARKS["interpreter"], id="interpreter"),
    ]


# --- which NA backend a call takes ------------------------------------------------------------


@contextlib.contextmanager
def expect_na_backend(expected: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Asserts that every whole-attention NA call (na1d / na2d, the module) inside the block
    is computed by `expected` ("fused", "unfused" or "reference"), and that there was one: for
    tests that call the default backend ("auto") and must say which kernels they checked."""
    chosen: list[str] = []
    real = dispatch.resolve_backend

    def spy(*args, **kwargs):
        chosen.append(real(*args, **kwargs))
        return chosen[-1]

    with monkeypatch.context() as patch:
        patch.setattr(dispatch, "resolve_backend", spy)
        yield chosen
    assert chosen, f"no NA call chose a backend (expected {expected!r})"
    assert set(chosen) == {expected}, f"NA calls chose {sorted(set(chosen))}, not {expected!r}"
