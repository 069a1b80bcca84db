"""The CUDA kernels of native/ as the extension ships them, without a GPU: compiled per
architecture with the build's flags, their resources read from ptxas, and the launch
configurations their host code chooses.

- Sources and flags: the .cu files setup.py builds (native/*/*.cu) with the nvcc flags of
  torch's extension builder (COMMON_NVCC_FLAGS) and of setup.py (-O3, relaxed constexpr,
  WITH_CUDA), C++20 as torch requires; `nvcc -cubin --resource-usage` per architecture.
  Every template instantiation the library registers (float32, float64, float16, bfloat16)
  is compiled, because the translation units are the library's own.
- Launch configurations: block size and dynamic shared memory come from the very host code
  of the GPU build, run on the emulated device (native/common/simt_emulator.h): its launch
  census records each kernel's block size, and the tiled NA kernels' plans (tile, head-dim
  chunk, dynamic shared memory) come from the launchers' planner through
  dinat_m2f_testing::na_tile_plan, for each problem and dtype.
- Not compiled here: native/testing/ (the emulated device's test-only ops and the sanitizer
  builds' planted bugs, host code never built by nvcc; `test_only_kernels` lists them).
"""

from __future__ import annotations

import re
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch

from tools.ptxas_report import KernelResources, parse_ptxas_log

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "native"
# setup.py's own nvcc flags ("-O3", "--expt-relaxed-constexpr", "-DWITH_CUDA"), and what
# torch's extension builder adds (defines, C++ standard); COMMON_NVCC_FLAGS are added below
BUILD_FLAGS = (
    "-O3",
    "--expt-relaxed-constexpr",
    "-DWITH_CUDA",
    "-DTORCH_API_INCLUDE_EXTENSION_H",
    "-DTORCH_EXTENSION_NAME=_C",
    "-std=c++20",
)
DTYPES = {  # the library's dtype dispatch, as template arguments
    "float": torch.float32,
    "double": torch.float64,
    "c10::Half": torch.float16,
    "c10::BFloat16": torch.bfloat16,
}


def sources() -> list[Path]:
    """The .cu files of the extension (setup.py compiles native/*/*.cu)."""
    return sorted(NATIVE.glob("*/*.cu"))


def test_only_kernels() -> list[str]:
    """__global__ functions under native/testing/: test-only, never in the library."""
    names = set()
    for path in (NATIVE / "testing").rglob("*"):
        if path.suffix in (".cu", ".cuh", ".h", ".cpp"):
            names.update(re.findall(r"__global__\s+void\s+(\w+)\s*\(", path.read_text()))
    return sorted(names)


def nvcc_command(nvcc: str, source: Path, arch: int, cubin: Path) -> list[str]:
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths

    includes = [str(NATIVE), *include_paths("cpu"), sysconfig.get_paths()["include"]]
    return [
        nvcc,
        "-cubin",
        f"-arch=sm_{arch}",
        "--resource-usage",
        *COMMON_NVCC_FLAGS,
        *BUILD_FLAGS,
        *(f"-I{path}" for path in includes),
        str(source),
        "-o",
        str(cubin),
    ]


def compile_source(nvcc: str, source: Path, arch: int) -> dict[str, KernelResources]:
    """ptxas's resources of every kernel of one .cu file for sm_`arch`, by mangled name."""
    with tempfile.TemporaryDirectory() as tmp:
        command = nvcc_command(nvcc, source, arch, Path(tmp) / "out.cubin")
        run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(
            f"nvcc failed on {source.relative_to(ROOT)} for sm_{arch} (exit {run.returncode}):\n"
            f"{' '.join(command)}\n{run.stdout}{run.stderr}"
        )
    found = parse_ptxas_log(run.stdout + run.stderr)
    if not found:
        raise RuntimeError(f"no kernel found in nvcc's output for {source}:\n{run.stderr}")
    return found


class KernelName(NamedTuple):
    family: str  # e.g. "na::qk_tiled_kernel"
    dtype: torch.dtype
    symbol: str  # mangled

    @property
    def label(self) -> str:
        return f"{self.family}<{str(self.dtype).removeprefix('torch.')}>"


def demangle(symbols: list[str]) -> list[KernelName]:
    """Family (namespace :: name, without the library and device namespaces) and dtype of
    each kernel symbol (c++filt reads the Itanium names of nvcc's host-side symbols)."""
    run = subprocess.run(
        ["c++filt"], input="\n".join(symbols), capture_output=True, text=True, check=True
    )
    names = []
    for symbol, text in zip(symbols, run.stdout.splitlines()):
        match = re.match(r"void dinat_m2f::(\w+)::(?:cuda|emulated)::(\w+)<([\w:]+)", text)
        if match is None or match.group(3) not in DTYPES:
            raise ValueError(f"unexpected kernel symbol {symbol!r} ({text!r})")
        family, name, dtype = match.groups()
        names.append(KernelName(f"{family}::{name}", DTYPES[dtype], symbol))
    return names


def load_test_extension() -> None:
    """Loads dinat_m2f._C_testing (the emulated device, its launch census and the tiled
    planner), through the tests' loader: it is test-only, never imported by the package."""
    from tests.emulated_device import load, unavailable_reason

    if not load():
        raise RuntimeError(f"the emulated device is not built ({unavailable_reason()})")


def launch_census() -> dict[tuple[str, torch.dtype], tuple[int, int]]:
    """(family, dtype) -> (threads per block, largest dynamic shared memory) of every native
    kernel, read from the launch census after running each op's emulated twin once on a
    small problem of each dtype (head dim 8 takes the naive NA kernels, 32 the tiled ones).
    Block sizes are constants of the launchers; dynamic shared memory is per problem
    (`tile_plan`)."""
    ops = torch.ops.dinat_m2f_testing
    g = torch.Generator().manual_seed(0)
    for dtype in DTYPES.values():

        def rand(*shape, dtype=dtype):
            return torch.randn(*shape, generator=g).to(dtype)

        for dim in (8, 32):
            # groups of at most 4 tokens: the smallest tile, within any shared-memory budget
            q, k, v = (rand(1, 7, 6, 2, dim) for _ in range(3))
            attn = ops.na_qk(q, k, rand(2, 5, 5), [3, 3], [2, 1]).softmax(-1)
            out = ops.na_av(attn, v, [3, 3], [2, 1])
            ops.na_qk_backward(torch.randn_like(attn), q, k, [3, 3], [2, 1])
            ops.na_av_backward(torch.randn_like(out), attn, v, [3, 3], [2, 1])
            ops.na_rpb_backward(torch.randn_like(attn), [3, 3], [2, 1])
        shapes, starts = torch.tensor([[6, 5], [3, 3]]), torch.tensor([0, 30])
        value, weights = rand(2, 39, 2, 4), rand(2, 7, 2, 2, 3).abs()
        locations = rand(2, 7, 2, 2, 3, 2).abs().clamp(0, 1)
        out = ops.ms_deform_attn(value, shapes, starts, locations, weights)
        ops.ms_deform_attn_backward(
            torch.randn_like(out), value, shapes, starts, locations, weights
        )
    lines = [line.split("\t") for line in ops.launch_census()]
    # the census demangles itself; its names read like c++filt's
    by_text = {text: (int(threads), int(shared)) for text, _, _, threads, shared in lines}
    found = {}
    for text, config in by_text.items():
        match = re.match(r"void dinat_m2f::(\w+)::emulated::(\w+)<([\w:]+)", text)
        if match and match.group(3) in DTYPES:
            found[(f"{match.group(1)}::{match.group(2)}", DTYPES[match.group(3)])] = config
    return found


class TilePlan(NamedTuple):
    tile: int  # queries per side of a block's tile
    chunk: int  # head-dim channels staged at a time
    shared: int  # dynamic shared memory bytes


def tile_plan(
    kernel: str, dtype: torch.dtype, size: tuple[int, int], heads: int, dim: int, k: int, d: int
) -> TilePlan | None:
    """The plan the CUDA launch of the tiled "qk" or "av" kernel uses for this problem, from
    the launcher's planner (None: the naive kernel runs)."""
    like = torch.empty((), dtype=dtype).expand(1, *size, heads, dim)  # only its shape is read
    tile, chunk, shared = torch.ops.dinat_m2f_testing.na_tile_plan(like, [k, k], [d, d], kernel)
    return TilePlan(tile, chunk, shared) if tile else None
