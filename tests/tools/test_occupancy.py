"""tools/occupancy.py against NVIDIA's own occupancy calculator: cuda_occupancy.h (the header
the CUDA runtime's occupancy API is built on; a copy ships with Triton and with every CUDA
toolkit), compiled by the host C++ compiler and fed the same launches and the same device
limits. The limits themselves are the table's (sources in tools/occupancy.py); this checks the
arithmetic: register allocation per warp and sub-partition, shared-memory rounding and the
reserved kilobyte, the opt-in limit, the block and warp caps, and the limiter."""

import itertools
import shutil
import subprocess
from pathlib import Path

import pytest

from tools.occupancy import ARCHS, occupancy


def occupancy_header() -> Path | None:
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parents[1] / "include" / "cuda_occupancy.h")
    try:
        import triton

        nvidia = Path(triton.__file__).parent / "backends" / "nvidia" / "include"
        candidates.append(nvidia / "cuda_occupancy.h")
    except ImportError:
        pass
    return next((path for path in candidates if path.is_file()), None)


# One launch per input line: "arch regs threads static dynamic opt_in"; prints
# "blocks limiting-factor-bits", with the device properties of tools/occupancy.py's table.
ORACLE = r"""
#include <cstdio>
#include "cuda_occupancy.h"
int main() {
  int arch, regs, threads, opt_in, smem_sm, smem_block, smem_optin, reserved;
  long static_smem, dynamic_smem;
  while (std::scanf("%d %d %d %ld %ld %d %d %d %d %d", &arch, &regs, &threads, &static_smem,
                    &dynamic_smem, &opt_in, &smem_sm, &smem_block, &smem_optin,
                    &reserved) == 10) {
    cudaOccDeviceProp prop;
    prop.computeMajor = arch / 10;
    prop.computeMinor = arch % 10;
    prop.maxThreadsPerBlock = 1024;
    prop.maxThreadsPerMultiprocessor = 2048;
    prop.regsPerBlock = 65536;
    prop.regsPerMultiprocessor = 65536;
    prop.warpSize = 32;
    prop.sharedMemPerBlock = smem_block;
    prop.sharedMemPerMultiprocessor = smem_sm;
    prop.numSms = 132;
    prop.sharedMemPerBlockOptin = smem_optin;
    prop.reservedSharedMemPerBlock = reserved;
    cudaOccFuncAttributes attr;
    attr.maxThreadsPerBlock = 1024;
    attr.numRegs = regs;
    attr.sharedSizeBytes = static_smem;
    attr.partitionedGCConfig = PARTITIONED_GC_OFF;
    attr.shmemLimitConfig = opt_in ? FUNC_SHMEM_LIMIT_OPTIN : FUNC_SHMEM_LIMIT_DEFAULT;
    attr.maxDynamicSharedSizeBytes = opt_in ? smem_optin - static_smem : smem_block - static_smem;
    attr.numBlockBarriers = 0;
    attr.virtualResourceCount = 0;
    cudaOccDeviceState state;
    cudaOccResult result;
    const cudaOccError error = cudaOccMaxActiveBlocksPerMultiprocessor(
        &result, &prop, &attr, &state, threads, dynamic_smem);
    if (error != CUDA_OCC_SUCCESS) return 1;
    std::printf("%d %u\n", result.activeBlocksPerMultiprocessor, result.limitingFactors);
  }
  return 0;
}
"""
FACTORS = {1: "warps", 2: "registers", 4: "shared", 8: "blocks"}


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    header = occupancy_header()
    compiler = shutil.which("c++") or shutil.which("g++")
    if header is None or compiler is None:
        pytest.skip("needs cuda_occupancy.h (CUDA toolkit or Triton) and a C++ compiler")
    folder = tmp_path_factory.mktemp("occupancy")
    (folder / "oracle.cpp").write_text(ORACLE)
    binary = folder / "oracle"
    subprocess.run(
        [compiler, "-O1", f"-I{header.parent}", str(folder / "oracle.cpp"), "-o", str(binary)],
        check=True,
    )

    def run(launches):
        lines = []
        for arch, regs, threads, static, dynamic, opt_in in launches:
            a = ARCHS[arch]
            lines.append(
                f"{arch} {regs} {threads} {static} {dynamic} {int(opt_in)} {a.shared_per_sm} "
                f"{a.shared_per_block} {a.shared_per_block_optin} {a.shared_reserved_per_block}"
            )
        out = subprocess.run(
            [str(binary)], input="\n".join(lines) + "\n", capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return [tuple(int(x) for x in line.split()) for line in out.stdout.splitlines()]

    return run


# registers around the allocation unit (8 per thread = 256 per warp) and at the extremes;
# blocks of 1..32 warps, uneven ones; shared memory across 48 KB, the SM's size and the limits
LAUNCHES = list(
    itertools.product(
        sorted(ARCHS),
        (0, 16, 24, 32, 33, 40, 64, 72, 96, 128, 168, 200, 255),
        (32, 96, 128, 256, 288, 512, 1024),
        (0, 2048),
        (0, 1000, 6144, 40000, 47 * 1024, 48 * 1024, 100_000, 162 * 1024, 200_000, 226 * 1024),
        (False, True),
    )
)


def test_occupancy_matches_nvidias_calculator(oracle):
    expected = oracle(LAUNCHES)
    assert len(expected) == len(LAUNCHES)
    mismatches = []
    for launch, (blocks, bits) in zip(LAUNCHES, expected):
        arch, regs, threads, static, dynamic, opt_in = launch
        got = occupancy(ARCHS[arch], regs, threads, static, dynamic, opt_in)
        limiter = {name for bit, name in FACTORS.items() if bits & bit}
        if got.blocks_per_sm != blocks or (blocks and set(got.limiter.split(", ")) != limiter):
            mismatches.append((launch, (blocks, sorted(limiter)), got))
    assert not mismatches, f"{len(mismatches)} of {len(LAUNCHES)} differ, e.g. {mismatches[:5]}"
    # the grid reaches every outcome: each limiter alone, and launches that fail
    outcomes = {bits for blocks, bits in expected if blocks} | {0 for b, _ in expected if not b}
    assert {0, 1, 2, 4, 8} <= outcomes


def test_failed_launches_say_why():
    sm80 = ARCHS[80]
    too_much = occupancy(sm80, 32, 256, 0, 49 * 1024, opt_in=False)
    assert too_much.blocks_per_sm == 0 and "without opting in" in too_much.problem
    assert occupancy(sm80, 32, 256, 0, 49 * 1024, opt_in=True).blocks_per_sm == 3
    over = occupancy(sm80, 32, 256, 0, 170_000, opt_in=True)
    assert over.blocks_per_sm == 0 and "> 167936 per block" in over.problem
    assert "> 1024 per block" in occupancy(sm80, 32, 2048, 0, 0, opt_in=False).problem
    assert "per block" in occupancy(sm80, 255, 1024, 0, 0, opt_in=False).problem
