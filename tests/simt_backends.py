"""Where the CUDA tests run: on a real GPU ("cuda", skipped without one), and on the emulated
device ("emulated": the same CUDA kernels and launch code on CPU threads, see
native/common/simt_emulator.h), which CI always runs. The emulated device is slow (every
block is 256 threads with real barriers), so the emulated cases use small shapes."""

import contextlib

import pytest
import torch

from tests.conftest import requires_emulated_device
from tests.emulated_device import use_emulated_device


def cases(cuda_cases, emulated_cases, ids):
    """pytest params ("backend", case): the real GPU's cases and the emulated device's."""
    return [
        pytest.param("cuda", c, marks=pytest.mark.cuda, id=f"cuda-{ids(c)}") for c in cuda_cases
    ] + [
        pytest.param("emulated", c, marks=requires_emulated_device, id=f"emulated-{ids(c)}")
        for c in emulated_cases
    ]


def backends():
    """pytest params for tests that take only the backend."""
    return [
        pytest.param("cuda", marks=pytest.mark.cuda, id="cuda"),
        pytest.param("emulated", marks=requires_emulated_device, id="emulated"),
    ]


def device(backend: str) -> torch.device:
    """The device of the backend's tensors."""
    return torch.device("cuda" if backend == "cuda" else "cpu")


def on(backend: str):
    """Context in which the native ops of `device(backend)` tensors run on that backend."""
    return use_emulated_device() if backend == "emulated" else contextlib.nullcontext()
