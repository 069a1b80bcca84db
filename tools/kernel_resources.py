"""Registers, spills, shared and local memory, block size and theoretical occupancy of every GPU
kernel this project ships, on Ampere (sm_80), Hopper (sm_90) and Blackwell (sm_100), computed
without a GPU, for the launch configurations DiNAT's and NAT's problems use.

- native/ (the .cu kernels): every __global__ function in every dtype the library builds,
  compiled by nvcc with the build's flags (tools/native_kernels.py); the tiled NA kernels in
  every tile plan their launcher picks for the problems below;
- the fused Triton kernels (dinat_m2f/ops/na/fused_kernels.py): compiled ahead of time by
  Triton for each launch the fused path makes for the problems below, in float16, bfloat16
  and float32 (tools/triton_kernels.py);
- occupancy from each architecture's published limits (tools/occupancy.py).

The problems: NA on every level of the DiNAT / NAT models of docs/ (the dilation schedules of
dinat_m2f/modeling/backbone/dinat.py and the detection configs) at their input sizes, maps
padded to kernel x dilation as the attention module pads them, head dims 32 (every DiNAT
variant), 64 and 128 (the fused kernels' largest); plus kernel 13, the fused kernels' largest.

    python -m tools.kernel_resources [--arch 80 90 100] [--part native triton] [--jobs 2]
        [--backward-dtypes float16 bfloat16 float32] [--markdown docs/kernel_resources.md]
        [--json out.json]

`make kernel-resources` writes docs/kernel_resources.md. Exits 1 when a configuration cannot
launch on its architecture or a forward kernel spills (tests/native/test_kernel_resources.py
runs the sm_90 set).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import torch

from tools.occupancy import ARCHS, Occupancy, occupancy
from tools.ptxas_report import KernelResources

ROOT = Path(__file__).resolve().parents[1]
HEAD_DIMS = (32, 64, 128)  # every DiNAT variant: 32; the fused kernels take up to 128
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# kernels that run in a forward pass (must not spill); the rest are backward-only
FORWARD = {
    "na::qk_naive_kernel",
    "na::av_naive_kernel",
    "na::qk_tiled_kernel",
    "na::av_tiled_kernel",
    "ms_deform_attn::forward_kernel",
    "na_forward_kernel",
}


class Problem(NamedTuple):
    """One NA call of a model: a (height, width) map after padding, kernel, dilation."""

    size: tuple[int, int]
    kernel: int
    dilation: int
    heads: int
    dim: int
    where: str  # the model setting and level it comes from

    @property
    def label(self) -> str:
        h, w = self.size
        return f"{h}x{w} k{self.kernel} d{self.dilation} D{self.dim}"


def model_settings() -> list[tuple[str, tuple[int, int], int, list[list[int]]]]:
    """(name, input size, kernel, per-level dilations) of the models of docs/."""
    from dinat_m2f.modeling.backbone.dinat import (
        IMAGENET_224_K7,
        IMAGENET_384_K7,
        MASK2FORMER_K11,
    )

    detection = _config_dilations("configs/coco/detection/dinat/mask_rcnn_dinat_tiny_3x.yaml")
    return [
        ("ImageNet 224, DiNAT k7", (224, 224), 7, IMAGENET_224_K7["deep"]),
        ("ImageNet 384, DiNAT-L k7", (384, 384), 7, IMAGENET_384_K7),
        ("ImageNet 384, DiNAT-L k11", (384, 384), 11, IMAGENET_224_K7["deep"]),
        ("Mask2Former ADE20K 640, k11", (640, 640), 11, MASK2FORMER_K11),
        ("Mask2Former COCO 1024, k11", (1024, 1024), 11, MASK2FORMER_K11),
        ("Mask2Former Cityscapes 1024x2048, k11", (1024, 2048), 11, MASK2FORMER_K11),
        ("Mask R-CNN COCO 800x1344, k7", (800, 1344), 7, detection),
        ("largest fused kernel, k13 at 1024", (1024, 1024), 13, MASK2FORMER_K11),
    ]


def _config_dilations(path: str) -> list[list[int]]:
    from dinat_m2f.config import default_cfg

    cfg = default_cfg()
    cfg.merge_from_file(str(ROOT / path))
    return [list(level) for level in cfg.MODEL.DINAT.DILATIONS]


def problems() -> list[Problem]:
    """Every distinct NA problem of the model settings (level l of an H x W input works on
    H/4/2^l x W/4/2^l, padded to kernel x dilation), at each head dim."""
    from dinat_m2f.modeling.backbone.dinat import VARIANTS

    heads = VARIANTS["large"][2]  # the most heads: the largest grids
    found: dict[tuple, Problem] = {}
    for name, (height, width), kernel, schedule in model_settings():
        for level, dilations in enumerate(schedule):
            h, w = height // 4 // 2**level, width // 4 // 2**level
            for d in sorted(set(dilations)):
                size = (max(h, kernel * d), max(w, kernel * d))
                for dim in HEAD_DIMS:
                    key = (size, kernel, d, dim)
                    where = f"{name}, level {level + 1}"
                    found.setdefault(key, Problem(size, kernel, d, heads[level], dim, where))
    return list(found.values())


class Row(NamedTuple):
    """One kernel in one launch configuration on one architecture."""

    part: str  # "native" or "triton"
    kernel: str
    dtype: str
    config: str
    arch: int
    resources: KernelResources
    threads: int
    dynamic_shared: int
    occupancy: Occupancy
    problems: int  # how many problems use this configuration
    example: str  # one of them

    @property
    def forward(self) -> bool:
        return self.kernel in FORWARD

    def as_dict(self) -> dict:
        return dict(
            part=self.part,
            kernel=self.kernel,
            dtype=self.dtype,
            config=self.config,
            arch=self.arch,
            forward=self.forward,
            threads=self.threads,
            dynamic_shared=self.dynamic_shared,
            problems=self.problems,
            example=self.example,
            **self.resources._asdict(),
            **{f"occupancy_{k}": v for k, v in self.occupancy._asdict().items()},
        )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ------------------------------------------------------------------------------------------
# native/


def _compile_native(job: tuple[str, Path, int]) -> dict[str, KernelResources]:
    from tools.native_kernels import compile_source

    return compile_source(*job)


def native_rows(archs: list[int], nvcc: str, pool: ProcessPoolExecutor) -> list[Row]:
    from tools import native_kernels as nk

    nk.load_test_extension()

    jobs = [(nvcc, source, arch) for arch in archs for source in nk.sources()]
    compiled: dict[int, dict[str, KernelResources]] = defaultdict(dict)
    for (_, _, arch), found in zip(jobs, pool.map(_compile_native, jobs)):
        compiled[arch].update(found)
    census = nk.launch_census()
    # tile plans of the tiled kernels per dtype: plan -> problems using it
    plans: dict[tuple[str, torch.dtype], dict] = defaultdict(dict)
    for dtype in nk.DTYPES.values():
        for p in problems():
            for op in ("qk", "av"):
                plan = nk.tile_plan(op, dtype, p.size, p.heads, p.dim, p.kernel, p.dilation)
                if plan is not None:
                    plans[(f"na::{op}_tiled_kernel", dtype)].setdefault(plan, []).append(p)
    rows = []
    for arch in archs:
        names = nk.demangle(sorted(compiled[arch]))
        for name in sorted(names, key=lambda n: (n.family, str(n.dtype))):
            if (name.family, name.dtype) not in census:
                raise RuntimeError(f"{name.label}: never launched by the launch census")
            threads, _ = census[(name.family, name.dtype)]
            res = compiled[arch][name.symbol]
            configs = [(plan, ps) for plan, ps in plans.get((name.family, name.dtype), {}).items()]
            if not configs:  # fixed launch: no dynamic shared memory
                configs = [(None, [])]
            for plan, users in sorted(configs, key=lambda c: c[0] or ()):
                shared = plan.shared if plan else 0
                kernels = "/".join(f"k{k}" for k in sorted({u.kernel for u in users}))
                config = f"{kernels}: tile {plan.tile}, chunk {plan.chunk}" if plan else "any"
                rows.append(
                    Row(
                        "native",
                        name.family,
                        _dtype_name(name.dtype),
                        config,
                        arch,
                        res,
                        threads,
                        shared,
                        occupancy(
                            ARCHS[arch],
                            res.registers,
                            threads,
                            res.static_shared,
                            shared,
                            opt_in=False,
                        ),
                        len(users),
                        users[0].label if users else "",
                    )
                )
    return rows


# ------------------------------------------------------------------------------------------
# fused Triton kernels


def triton_calls(backward_dtypes: tuple[torch.dtype, ...] = TRITON_DTYPES) -> dict[tuple, list]:
    """The fused path's launches for every problem and dtype (the backward kernels' only in
    `backward_dtypes`), grouped by what decides the binary (kernel, dtypes, constexpr
    arguments, options): group -> [(call, problem)]."""
    from dinat_m2f.ops.na import fused, fused_kernels

    groups: dict[tuple, list] = defaultdict(list)
    f32 = torch.float32
    for dtype in TRITON_DTYPES:
        for p in problems():
            query = torch.empty(1, *p.size, p.heads, p.dim, device="meta", dtype=dtype)
            launch = fused.Problem(query, query, [p.kernel] * 2, [p.dilation] * 2)
            scale = p.dim**-0.5
            calls = [launch.forward_call(dtype, dtype, dtype, dtype, dtype, f32, scale)]
            if dtype in backward_dtypes:
                calls += launch.backward_calls(
                    dtype, dtype, dtype, dtype, dtype, f32, f32, dtype, dtype, dtype, f32, scale
                )
            for call in calls:
                kernel = getattr(fused_kernels, call.kernel)
                constexprs = [param.name for param in kernel.params if param.is_constexpr]
                key = (
                    call.kernel,
                    _dtype_name(dtype),
                    tuple((name, call.kwargs[name]) for name in constexprs),
                    tuple(sorted((k, v) for k, v in call.kwargs.items() if k.startswith("num_"))),
                )
                groups[key].append((call, p))
    return groups


def _triton_config(key: tuple) -> str:
    kernel, _, constexprs, _ = key
    c = dict(constexprs)
    blocks = (
        f"blocks {c['BLOCK_Q']}x{c['BLOCK_K']}"
        if "BLOCK_Q" in c
        else f"key tile {c['KTH']}x{c['KTW']}, block {c['BLOCK_Q_KV']}"
    )
    return f"k{c['KH']}, {blocks}, D {c['BLOCK_D']}"


def _compile_triton(job: tuple[list, int]) -> list:
    from tools.triton_kernels import compile_call

    calls, arch = job
    return [compile_call(call, arch) for call in calls]


def triton_rows(
    archs: list[int], pool: ProcessPoolExecutor, backward_dtypes: tuple = TRITON_DTYPES
) -> list[Row]:
    groups = triton_calls(backward_dtypes)
    jobs = [([call for call, _ in members], arch) for arch in archs for members in groups.values()]
    results = pool.map(_compile_triton, jobs)
    rows = []
    keys = [key for _ in archs for key in groups]
    for (_, arch), key, compiled in zip(jobs, keys, results):
        users = [p for _, p in groups[key]]
        by_binary: dict[str, list] = defaultdict(list)
        for result, user in zip(compiled, users):
            by_binary[result.key].append((result, user))
        for members in by_binary.values():
            result = members[0][0]
            res = result.resources
            rows.append(
                Row(
                    "triton",
                    key[0],
                    key[1],
                    _triton_config(key),
                    arch,
                    res,
                    result.threads,
                    result.dynamic_shared,
                    occupancy(
                        ARCHS[arch],
                        res.registers,
                        result.threads,
                        res.static_shared,
                        result.dynamic_shared,
                        opt_in=True,
                    ),
                    len({u for _, u in members}),
                    members[0][1].label,
                )
            )
    return rows


# ------------------------------------------------------------------------------------------
# checks and the report


def failures(rows: list[Row]) -> list[str]:
    """Configurations that cannot launch on their architecture, and forward kernels that
    spill."""
    found = []
    for r in rows:
        where = f"{r.part} {r.kernel}<{r.dtype}> [{r.config}] on {ARCHS[r.arch].name}"
        if r.occupancy.blocks_per_sm == 0:
            found.append(f"{where} cannot launch: {r.occupancy.problem}")
        if r.forward and (r.resources.spill_stores or r.resources.spill_loads):
            found.append(
                f"{where} is a forward kernel and spills: {r.resources.spill_stores} bytes "
                f"stored, {r.resources.spill_loads} loaded per thread"
            )
    return found


def toolchain(nvcc: str | None) -> list[str]:
    import triton

    lines = []
    if nvcc:
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        lines.append(f"nvcc: {version.strip().splitlines()[-1]}")
    lines.append(f"Triton {triton.__version__}")
    for arch in (80, 100):
        tool = triton.knobs.nvidia.ptxas_blackwell if arch >= 100 else triton.knobs.nvidia.ptxas
        version = subprocess.run([tool.path, "--version"], capture_output=True, text=True).stdout
        lines.append(
            f"{Path(tool.path).name} ({'sm_100' if arch >= 100 else 'sm_80, sm_90'}): "
            f"{version.strip().splitlines()[-1]}"
        )
    return lines


def _kb(n: int) -> str:
    return f"{n / 1024:g} KB"


LIMITS_HEADER = (
    "| arch | e.g. | threads / block | threads / SM | blocks / SM | registers / SM (unit) "
    "| registers / thread | shared / SM | shared / block (opt-in) | reserved / block |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def limits_table(archs: list[int]) -> str:
    lines = [LIMITS_HEADER]
    for arch in archs:
        a = ARCHS[arch]
        lines.append(
            f"| {a.name} | {a.example} | {a.max_threads_per_block} | {a.max_threads_per_sm} | "
            f"{a.max_blocks_per_sm} | {a.registers_per_sm} ({a.register_unit} per warp) | "
            f"{a.max_registers_per_thread} | {_kb(a.shared_per_sm)} | "
            f"{_kb(a.shared_per_block)} ({_kb(a.shared_per_block_optin)}) | "
            f"{_kb(a.shared_reserved_per_block)} |"
        )
    return "\n".join(lines)


ROW_HEADER = (
    "| kernel | dtype | launch config | threads | registers | spill stores / loads (B) "
    "| local (B) | shared static + dynamic (B) | occupancy | limited by | problems (e.g.) |\n"
    "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"
)


def rows_table(rows: list[Row]) -> str:
    lines = [ROW_HEADER]
    for r in rows:
        res, occ = r.resources, r.occupancy
        users = f"{r.problems} ({r.example})" if r.problems else "any"
        lines.append(
            f"| {r.kernel} | {r.dtype} | {r.config} | {r.threads} | {res.registers} | "
            f"{res.spill_stores} / {res.spill_loads} | {res.local} | "
            f"{res.static_shared} + {r.dynamic_shared} | "
            f"{occ.warps_per_sm} warps, {occ.fraction:.0%} | {occ.limiter} | {users} |"
        )
    return "\n".join(lines)


def summary(rows: list[Row]) -> list[str]:
    lines = []
    for part in ("native", "triton"):
        mine = [r for r in rows if r.part == part]
        if not mine:
            continue
        title = "native/ (.cu)" if part == "native" else "fused Triton"
        spills = [r for r in mine if r.resources.spill_stores or r.resources.spill_loads]
        worst = min(mine, key=lambda r: r.occupancy.fraction)
        lines.append(
            f"- {title}: {len({(r.kernel, r.dtype, r.config) for r in mine})} kernel "
            f"configurations; launch failures: "
            f"{sum(r.occupancy.blocks_per_sm == 0 for r in mine)}; spilling: {len(spills)} "
            f"(forward: {sum(r.forward for r in spills)}); lowest occupancy "
            f"{worst.occupancy.fraction:.0%} ({worst.kernel}<{worst.dtype}> [{worst.config}] "
            f"on {ARCHS[worst.arch].name}, {worst.occupancy.limiter})"
        )
        for r in spills:
            lines.append(
                f"  - spills: {r.kernel}<{r.dtype}> [{r.config}] on {ARCHS[r.arch].name}: "
                f"{r.resources.spill_stores} B stored / {r.resources.spill_loads} B loaded per "
                f"thread, {r.resources.local} B of local memory"
            )
    return lines


def markdown(rows: list[Row], archs: list[int], tools: list[str], problem_list) -> str:
    from tools.native_kernels import test_only_kernels

    out = [
        "# GPU kernel resources on Ampere, Hopper and Blackwell",
        "",
        "Generated without a GPU by `make kernel-resources` (`python -m tools.kernel_resources`,"
        " see its docstring); do not edit by hand. Toolchains: " + "; ".join(tools) + ".",
        "",
        NOTES,
        "",
        "## Summary",
        "",
        *summary(rows),
        "",
        "## Architecture limits",
        "",
        "The table of tools/occupancy.py (sources there: the CUDA C++ Programming Guide's "
        "technical specifications per compute capability, NVIDIA's Ampere / Hopper / "
        "Blackwell tuning guides, and cuda_occupancy.h for the allocation units). 64 warps "
        "per SM on all three; registers per thread at most 255.",
        "",
        limits_table(archs),
    ]
    for part, title in (("native", "native/ (.cu) kernels"), ("triton", "Fused Triton kernels")):
        for arch in archs:
            mine = [r for r in rows if r.part == part and r.arch == arch]
            if mine:
                out += ["", f"## {title} on {ARCHS[arch].name} ({ARCHS[arch].example})", ""]
                out.append(rows_table(mine))
    out += [
        "",
        "## Problems",
        "",
        "Every NA call of these model settings (map after padding, kernel, dilation, head "
        "dim), each listed with the first setting and level it comes from:",
        "",
        *(f"- {p.label}: {p.where}" for p in problem_list),
        "",
        "Not compiled here: the test-only kernels of native/testing/ (the sanitizer builds' "
        "planted bugs, built by the host compiler for the emulated device, never by nvcc, "
        "never in the library): " + ", ".join(test_only_kernels()) + ".",
        "",
    ]
    return "\n".join(out)


NOTES = """\
How to read the tables: registers per thread, spills and local memory (the stack frame,
spills included) in bytes per thread, as ptxas reports them; shared memory per block (static
declarations + the dynamic shared memory the launch asks for; CUDA reserves 1 KB more per
block, counted in the occupancy); occupancy is the theoretical one: resident warps per SM
over 64, with the limit that sets it (registers, shared memory, warps or the 32-block cap).
The .cu launchers do not raise the 48 KB default per-block shared-memory limit (their tile
planner keeps to it); Triton raises it when a kernel needs more. Triton compiles sm_90 and
sm_100 as sm_90a / sm_100a, the targets it runs on those GPUs. A row's problems are the
problems (listed at the end) whose launch uses that configuration.

What a spill costs: ptxas counts bytes per thread of the spill instructions it emitted; a
spill inside a loop (the fused kernels loop over key blocks, forward and dQ, or query blocks,
dK/dV) runs once per iteration. Spilled values live in local memory, cached in L1 and L2: a
block needs threads x local bytes of it. The worst, float32 dK/dV with a 2x8 key tile and
64-query blocks: 800 B x 128 threads = 100 KB per block at head dim 64, 664 B x 256 threads
= 166 KB at 128 (sm_90), beside 89 / 161 KB of shared memory, more than L1 keeps, so most of
it is L2 traffic; the others (4 to 88 B per thread) fit L1 beside the shared memory. Every
spill is listed in the summary above with its bytes per thread; a forward kernel that spills
fails the tool (and its test)."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=sorted(ARCHS), choices=sorted(ARCHS))
    parser.add_argument(
        "--part", nargs="+", default=["native", "triton"], choices=["native", "triton"]
    )
    parser.add_argument("--jobs", type=int, default=1, help="compiles run in parallel")
    parser.add_argument(
        "--backward-dtypes",
        nargs="+",
        default=[_dtype_name(d) for d in TRITON_DTYPES],
        choices=[_dtype_name(d) for d in TRITON_DTYPES],
        help="dtypes the fused backward kernels are compiled in (the forward: all three)",
    )
    parser.add_argument("--markdown", type=Path, help="write the report here (markdown)")
    parser.add_argument("--json", type=Path, help="write the rows here (JSON)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if "dinat_m2f.ops.na.fused_kernels" in sys.modules:
        parser.error("run in a fresh process: the fused kernels were imported already")
    # the kernels must compile (not be interpreted), and by this run's ptxas (no cache)
    os.environ["TRITON_INTERPRET"] = "0"
    cache = tempfile.mkdtemp(prefix="kernel_resources_")
    os.environ["TRITON_CACHE_DIR"] = cache
    nvcc = None
    if "native" in args.part:
        nvcc = shutil.which("nvcc") or shutil.which(
            str(Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc")
        )
        if nvcc is None:
            print("no nvcc on PATH or in $CUDA_HOME/bin: cannot compile native/", file=sys.stderr)
            return 2
    rows: list[Row] = []
    try:
        with ProcessPoolExecutor(args.jobs) as pool:
            if "native" in args.part:
                rows += native_rows(args.arch, nvcc, pool)
            if "triton" in args.part:
                backward = tuple(getattr(torch, name) for name in args.backward_dtypes)
                rows += triton_rows(args.arch, pool, backward)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    tools = toolchain(nvcc)
    report = markdown(rows, args.arch, tools, problems())
    print(report)
    if args.markdown:
        args.markdown.write_text(report)
        print(f"wrote {args.markdown}")
    if args.json:
        args.json.write_text(json.dumps(dict(toolchain=tools, rows=[r.as_dict() for r in rows])))
    found = failures(rows)
    for line in found:
        print(f"FAIL: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
