"""The kernel resource report on Hopper (sm_90), compiled here without a GPU
(tools/kernel_resources.py): every kernel the library ships, in every launch configuration
DiNAT's and NAT's problems use, must launch on sm_90 (threads, registers and shared memory
within the limits) and no forward kernel may spill. nvcc compiles native/ (skipped without
nvcc), Triton compiles the fused kernels (skipped without Triton's ptxas). Each part runs the
tool in a fresh process: the fused kernels must compile, not be interpreted, and Triton's
cache is a new folder every run."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.kernel_resources import FORWARD, Row, failures
from tools.occupancy import ARCHS, occupancy
from tools.ptxas_report import KernelResources

ROOT = Path(__file__).resolve().parents[2]
# parallel compiles: MAX_JOBS where set (cpujob sets it to its CPU slots), else up to 2
JOBS = os.environ.get("MAX_JOBS") or str(min(2, os.cpu_count() or 1))


def triton_ptxas() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    path = triton.knobs.nvidia.ptxas.path
    return path if path and Path(path).is_file() else None


def report(tmp_path: Path, part: str, *options: str) -> tuple[list[dict], str]:
    out = tmp_path / f"{part}.json"
    run = subprocess.run(
        [sys.executable, "-m", "tools.kernel_resources", "--arch", "90", "--part", part,
         "--jobs", JOBS, "--json", str(out), *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )  # fmt: skip
    problems = [line for line in run.stderr.splitlines() if line.startswith("FAIL")]
    assert run.returncode == 0 and not problems, "\n".join(problems) or run.stderr[-3000:]
    return json.loads(out.read_text())["rows"], run.stdout


def global_functions() -> set[str]:
    """__global__ functions of the library's device code (native/ minus native/testing/)."""
    names = set()
    for path in (ROOT / "native").rglob("*"):
        if path.suffix in (".cu", ".cuh", ".h") and "testing" not in path.parts:
            names.update(re.findall(r"__global__\s+void\s+(\w+)\s*\(", path.read_text()))
    return names


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on PATH: native/ not compiled")
def test_native_kernels_launch_on_sm90_and_forward_kernels_do_not_spill(tmp_path):
    rows, _ = report(tmp_path, "native")
    compiled = {(r["kernel"].split("::")[1], r["dtype"]) for r in rows}
    expected = {
        (name, dtype)
        for name in global_functions()
        for dtype in ("float32", "float64", "float16", "bfloat16")
    }
    assert compiled == expected
    tiled = [r for r in rows if "tiled" in r["kernel"]]
    # the tiled kernels' plans for DiNAT's problems: dynamic shared memory within 48 KB
    assert tiled and all(0 < r["dynamic_shared"] <= 48 * 1024 for r in tiled)
    assert {r["dtype"] for r in tiled if r["problems"]} == {"float32", "float64", "float16",
                                                             "bfloat16"}  # fmt: skip
    assert all(r["occupancy_blocks_per_sm"] > 0 and r["threads"] == 256 for r in rows)


@pytest.mark.skipif(triton_ptxas() is None, reason="no Triton with its ptxas: fused not compiled")
def test_fused_kernels_launch_on_sm90_and_the_forward_does_not_spill(tmp_path):
    """The forward in all three dtypes (which one needs the most registers depends on the
    configuration: on sm_90, of the 15 forward configurations of the full report, float16 is
    highest in 10, float32 in 3, bfloat16 in 2), the backward kernels in float32 only: they may
    spill, and whether they launch is decided by shared memory (threads are the same in every
    dtype; 255 registers x 256 threads always fit), and float32 needs the most shared memory
    in every configuration on all three archs of the full report (153 (kernel, config, arch)
    rows, docs/kernel_resources.md before commit 16d3f7f). `make kernel-resources` compiles
    the backward in every dtype."""
    rows, _ = report(tmp_path, "triton", "--backward-dtypes", "float32")
    backward = {"na_backward_query_kernel", "na_backward_key_kernel"}
    assert {(r["kernel"], r["dtype"]) for r in rows} == {
        ("na_forward_kernel", d) for d in ("float16", "bfloat16", "float32")
    } | {(k, "float32") for k in backward}
    forward = [r for r in rows if r["kernel"] == "na_forward_kernel"]
    assert all(r["spill_stores"] == r["spill_loads"] == 0 for r in forward)
    assert all(r["occupancy_blocks_per_sm"] > 0 for r in rows)


def _row(kernel: str, spills: int, shared: int, opt_in: bool) -> Row:
    arch = ARCHS[80]
    res = KernelResources(64, spills, spills, spills, 0, 1)
    occ = occupancy(arch, res.registers, 128, 0, shared, opt_in)
    return Row("triton", kernel, "float16", "test", 80, res, 128, shared, occ, 1, "")


def test_the_checks_name_failed_launches_and_forward_spills_only():
    fits = _row("na_forward_kernel", 0, 100_000, opt_in=True)
    assert failures([fits]) == []
    over = _row("na_forward_kernel", 0, 170_000, opt_in=True)  # sm_80 takes 163 KB per block
    (message,) = failures([over])
    assert "cannot launch" in message and "sm_80" in message and "shared memory" in message
    spilling = _row("na_forward_kernel", 8, 0, opt_in=True)
    (message,) = failures([spilling])
    assert "forward kernel and spills: 8 bytes" in message
    # backward kernels may spill (the report lists it); .cu launchers never opt in past 48 KB
    assert failures([_row("na_backward_key_kernel", 8, 0, opt_in=True)]) == []
    assert "na_forward_kernel" in FORWARD and "na::qk_tiled_kernel" in FORWARD
    assert len(failures([_row("na::av_tiled_kernel", 0, 60_000, opt_in=False)])) == 1
