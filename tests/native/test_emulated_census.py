"""Every __global__ function of native/ executes on the emulated device: the launch census
(dinat_m2f_testing::launch_census, kept by native/common/simt_emulator.h) names each kernel
the public ops' emulated twins launched, so a kernel added without a way to reach it on the
emulated device fails here. Results are checked against the CPU kernels in float64 by the
CUDA test-suite (tests/layers/*_cuda.py, its "emulated" cases); this file checks coverage."""

import re
from pathlib import Path

import torch

from tests.conftest import requires_emulated_device

NATIVE = Path(__file__).resolve().parents[2] / "native"
PLANTED = NATIVE / "testing" / "sanitizer"  # deliberately broken copies, never in the library


def global_functions() -> set[str]:
    names = set()
    for path in NATIVE.rglob("*"):
        if path.suffix in (".cu", ".cuh", ".h", ".cpp") and PLANTED not in path.parents:
            names.update(re.findall(r"__global__\s+void\s+(\w+)\s*\(", path.read_text()))
    return names


def census() -> dict[str, int]:
    """Launches so far per kernel name (the symbol's unqualified name, all dtypes summed)."""
    counts: dict[str, int] = {}
    for line in torch.ops.dinat_m2f_testing.launch_census():
        symbol, launches, blocks, threads, shared = line.split("\t")
        assert int(blocks) >= 1 and 1 <= int(threads) <= 1024 and int(shared) <= 48 * 1024, line
        name = re.search(r"::(\w+)<", symbol)
        assert name is not None, f"kernel symbol not resolved: {line!r}"
        counts[name.group(1)] = counts.get(name.group(1), 0) + int(launches)
    return counts


def run_every_op() -> None:
    ops = torch.ops.dinat_m2f_testing
    g = torch.Generator().manual_seed(0)
    for dim in (8, 32):  # head dim 8: the naive kernels; 32: the planner takes the tiled ones
        q, k, v = (torch.randn(1, 9, 10, 2, dim, generator=g) for _ in range(3))
        rpb = torch.randn(2, 5, 5, generator=g)
        attn = ops.na_qk(q, k, rpb, [3, 3], [2, 1]).softmax(-1)
        out = ops.na_av(attn, v, [3, 3], [2, 1])
        ops.na_qk_backward(torch.randn_like(attn), q, k, [3, 3], [2, 1])
        ops.na_av_backward(torch.randn_like(out), attn, v, [3, 3], [2, 1])
        ops.na_rpb_backward(torch.randn_like(attn), [3, 3], [2, 1])
    shapes = torch.tensor([[6, 5], [3, 3]])
    starts = torch.tensor([0, 30])
    value = torch.randn(2, 39, 2, 4, generator=g)
    locations = torch.rand(2, 7, 2, 2, 3, 2, generator=g) * 1.2 - 0.1
    weights = torch.rand(2, 7, 2, 2, 3, generator=g)
    out = ops.ms_deform_attn(value, shapes, starts, locations, weights)
    ops.ms_deform_attn_backward(torch.randn_like(out), value, shapes, starts, locations, weights)


def test_census_finds_the_kernels_of_native():
    expected = global_functions()
    # both op families' kernels are found, forward and backward
    assert {"qk_naive_kernel", "qk_tiled_kernel", "forward_kernel", "backward_kernel"} <= expected


@requires_emulated_device
def test_every_global_function_runs_on_the_emulated_device():
    before = census()
    run_every_op()
    after = census()
    ran = {name for name, count in after.items() if count > before.get(name, 0)}
    missing = global_functions() - ran
    assert not missing, (
        f"__global__ functions of native/ never launched on the emulated device: {missing}"
    )
