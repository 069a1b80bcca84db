"""Theoretical occupancy of a kernel launch on Ampere (sm_80), Hopper (sm_90) and Blackwell
(sm_100), from the architectures' published limits: no GPU needed.

`ARCHS` is the one table of limits. Sources:
- NVIDIA, CUDA C++ Programming Guide (CUDA 13.0), "Technical Specifications per Compute
  Capability": threads, warps and blocks per SM, registers per SM / block / thread, shared
  memory per SM and per block (8.0: 164 KB / 163 KB; 9.0 and 10.0: 228 KB / 227 KB), 48 KB
  per block without opting in;
- NVIDIA, Ampere / Hopper / Blackwell Tuning Guides (CUDA 13.0), "Unified Shared Memory/L1/
  Texture Cache": the same shared-memory sizes, and the 1 KB of shared memory CUDA reserves
  per block;
- cuda_occupancy.h (CUDA 13.0, the calculator the runtime's occupancy API uses): registers
  allocated per warp in units of 256, four SM sub-partitions, shared memory allocated in
  units of 128 bytes. `occupancy` follows its arithmetic (tests/tools/test_occupancy.py
  compares the two), with the default carve-out (the largest shared-memory partition).
"""

from __future__ import annotations

from typing import NamedTuple

KB = 1024


class ArchLimits(NamedTuple):
    name: str
    example: str  # a datacenter GPU of the architecture
    max_threads_per_block: int
    max_threads_per_sm: int
    max_blocks_per_sm: int
    registers_per_sm: int
    max_registers_per_block: int
    max_registers_per_thread: int
    register_unit: int  # registers are allocated per warp, rounded up to this
    sub_partitions: int  # a warp's registers come from one of these quarters of the file
    shared_per_sm: int  # bytes, the largest carve-out
    shared_per_block: int  # bytes a launch may use without opting in
    shared_per_block_optin: int  # bytes with cudaFuncAttributeMaxDynamicSharedMemorySize
    shared_reserved_per_block: int  # bytes CUDA reserves in every block
    shared_unit: int  # shared memory is allocated per block in units of this

    @property
    def max_warps_per_sm(self) -> int:
        return self.max_threads_per_sm // WARP


WARP = 32
_COMMON = dict(
    max_threads_per_block=1024,
    max_threads_per_sm=2048,
    max_blocks_per_sm=32,
    registers_per_sm=64 * KB,
    max_registers_per_block=64 * KB,
    max_registers_per_thread=255,
    register_unit=256,
    sub_partitions=4,
    shared_per_block=48 * KB,
    shared_reserved_per_block=1 * KB,
    shared_unit=128,
)
ARCHS = {
    80: ArchLimits(
        "sm_80", "A100", shared_per_sm=164 * KB, shared_per_block_optin=163 * KB, **_COMMON
    ),
    90: ArchLimits(
        "sm_90", "H100/H200", shared_per_sm=228 * KB, shared_per_block_optin=227 * KB, **_COMMON
    ),
    100: ArchLimits(
        "sm_100", "B200", shared_per_sm=228 * KB, shared_per_block_optin=227 * KB, **_COMMON
    ),
}


class Occupancy(NamedTuple):
    blocks_per_sm: int  # 0: the launch fails (`problem` says why)
    warps_per_sm: int
    fraction: float  # resident warps / the SM's maximum
    limiter: str  # the limits that set blocks_per_sm ("registers", "shared", ...)
    problem: str  # why the launch fails, or ""


NO_LIMIT = 1 << 30  # a kernel without registers (or shared memory) is not limited by them


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def occupancy(
    arch: ArchLimits,
    registers: int,
    threads: int,
    static_shared: int,
    dynamic_shared: int,
    opt_in: bool,
) -> Occupancy:
    """Resident blocks and warps per SM of a launch: `registers` per thread, `threads` per
    block, `static_shared` + `dynamic_shared` bytes of shared memory per block; `opt_in`:
    whether the launcher raises the per-block shared-memory limit (Triton does, our .cu
    launchers do not)."""
    warps = -(-threads // WARP)
    regs_per_warp = _round_up(registers * WARP, arch.register_unit)
    shared = _round_up(
        static_shared + dynamic_shared + arch.shared_reserved_per_block, arch.shared_unit
    )
    shared_limit = (
        arch.shared_per_block_optin if opt_in else arch.shared_per_block
    ) + arch.shared_reserved_per_block
    problems = []
    if threads > arch.max_threads_per_block:
        problems.append(f"{threads} threads > {arch.max_threads_per_block} per block")
    if registers > arch.max_registers_per_thread:
        problems.append(f"{registers} registers > {arch.max_registers_per_thread} per thread")
    # the hardware checks the block's registers as if spread over all sub-partitions
    if regs_per_warp * _round_up(warps, arch.sub_partitions) > arch.max_registers_per_block:
        problems.append(f"{registers} registers x {threads} threads > registers per block")
    if shared > shared_limit:
        problems.append(
            f"{shared} bytes of shared memory (with {arch.shared_reserved_per_block} "
            f"reserved) > {shared_limit} per block{'' if opt_in else ' without opting in'}"
        )
    if problems:
        return Occupancy(0, 0, 0.0, "launch fails", "; ".join(problems))
    regs_per_quarter = arch.registers_per_sm // arch.sub_partitions
    limits = {
        "warps": arch.max_warps_per_sm // warps,
        "registers": (
            (regs_per_quarter // regs_per_warp) * arch.sub_partitions // warps
            if regs_per_warp
            else NO_LIMIT
        ),
        "shared": arch.shared_per_sm // shared,
        "blocks": arch.max_blocks_per_sm,
    }
    blocks = min(limits.values())
    limiter = ", ".join(name for name, value in limits.items() if value == blocks)
    return Occupancy(blocks, blocks * warps, blocks * warps / arch.max_warps_per_sm, limiter, "")
