"""Ahead-of-time compiles of the fused NA kernels (dinat_m2f/ops/na/fused_kernels.py) for a GPU
architecture, on a machine without a GPU.

A launch goes through Triton's JIT exactly as on a GPU: the launcher's own arguments (fused.py,
`Problem.forward_call` / `backward_calls`, with dtypes in place of tensors) are bound and
specialised by Triton's binder (ints equal to 1 or divisible by 16, 16-byte-aligned
pointers), then compiled by `triton.compile` through `warmup` (which never launches). Only
the device queries are answered by `TargetDriver`, which names the architecture instead of
asking a GPU. Identical specialisations come back from Triton's in-process cache, so a
configuration shared by many problems is compiled once. The resources are ptxas's own
report (Triton runs `ptxas -v` and prints its log when `knobs.nvidia.dump_ptxas_log` is set);
the dynamic shared memory a launch asks for is the compiled kernel's `metadata.shared`, the
threads `num_warps` x 32. Triton raises the per-block shared-memory limit itself when a kernel
needs more than 48 KB.

Needs TRITON_INTERPRET unset or 0 before Triton is imported (the interpreter's kernels cannot
be compiled), and a fresh TRITON_CACHE_DIR so that every kernel is compiled by this run's
ptxas (tools/kernel_resources.py sets both).
"""

from __future__ import annotations

import contextlib
import io
from typing import NamedTuple

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.driver import DriverBase
from triton.runtime import driver

from dinat_m2f.ops.na import fused, fused_kernels
from tools.ptxas_report import KernelResources, parse_ptxas_log


class TargetDriver(DriverBase):
    """Triton's device queries answered for a GPU that is not there: the target is the
    architecture to compile for, the device number is the architecture (so that Triton's
    per-device kernel caches keep the architectures apart)."""

    def __init__(self, arch: int) -> None:
        self.arch = arch

    @classmethod
    def is_active(cls) -> bool:
        return False

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", self.arch, 32)

    def get_current_device(self) -> int:
        return self.arch

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def map_python_to_cpp_type(self, ty: str) -> str:
        raise NotImplementedError("ahead-of-time compiles only")

    def get_benchmarker(self):
        raise NotImplementedError("ahead-of-time compiles only")


class CompiledTriton(NamedTuple):
    key: str  # Triton's hash of the compiled kernel (same key: same binary)
    resources: KernelResources
    dynamic_shared: int  # bytes the launch asks for
    threads: int


def compile_call(call: fused.KernelCall, arch: int) -> CompiledTriton:
    """Compiles one launch of a fused kernel for sm_`arch` (80, 90, 100). Leaves
    TargetDriver as Triton's active driver: meant for processes that only compile."""
    if fused.interpreting():
        raise RuntimeError("Triton kernels compile only with TRITON_INTERPRET unset or 0")
    kernel = getattr(fused_kernels, call.kernel)
    driver.set_active(TargetDriver(arch))
    triton.knobs.nvidia.dump_ptxas_log = True
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        compiled = kernel.warmup(*call.args, grid=call.grid, **call.kwargs)
    found = parse_ptxas_log(log.getvalue())
    name = compiled.metadata.name
    if name not in found:
        # a cache hit: this specialisation was compiled (and reported) earlier in the run
        found = _reported[compiled.hash]
    _reported[compiled.hash] = found
    return CompiledTriton(
        key=compiled.hash,
        resources=found[name],
        dynamic_shared=int(compiled.metadata.shared),
        threads=int(compiled.metadata.num_warps) * 32,
    )


# ptxas's report per compiled kernel (Triton's cache returns the kernel, not the report)
_reported: dict[str, dict[str, KernelResources]] = {}
