#!/usr/bin/env python
"""Mutation check of the kernels' tests: plants one small fault at a time in a native kernel (an
off-by-one at a neighbourhood border, a dropped dilation, a wrong RPB index, a wrong bilinear
weight, ...), rebuilds the extension and runs the kernel tests, which must fail on every one.
Not part of `make test` (a run rebuilds the extension once per mutation).

Everything happens in a scratch copy of the working tree (the files git tracks, as they are
now), so the tree itself is never touched: a first CPU-only build there
(FORCE_CUDA=0 setup.py build_ext --inplace), the unmutated kernel tests (which must pass), then
per mutation: apply it, rebuild (ninja recompiles what the changed file reaches), run its tests
with -x (stopping at the first failure), restore the file. The CUDA kernels are covered as
the tests run them without a GPU: on the emulated device (the same device code on CPU
threads); the fused Triton kernels under Triton's interpreter.

A mutation is (file, exact text or regex, replacement); a pattern that is not found exactly
once, or a mutant that does not compile, is an error of the check (exit status 2), never a
pass: after a rewrite of a kernel, update its patterns in MUTATIONS. A mutant the tests do not
catch makes the exit status 1.

    python tools/mutation_check.py                        # all mutations, a table at the end
    python tools/mutation_check.py --only na_index        # names containing "na_index"
    python tools/mutation_check.py --list                 # the mutations, without running
    python tools/mutation_check.py --table docs/mutation_table.md

On a shared machine run it under the machine's CPU-slot wrapper (here: `cpujob python ...`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every mutant runs all the kernel tests of its op, those of the mutated code first (pytest -x
# stops at the first failure, so the order only changes how soon).
_NA_CPU = ("tests/layers/test_na_ops.py", "tests/layers/test_na_autograd.py")
_NA_DEVICE = ("tests/layers/test_na_cuda.py", "tests/layers/test_na_tiled_emulation.py")
NA_TESTS = _NA_CPU + _NA_DEVICE
NA_DEVICE_TESTS = _NA_DEVICE + _NA_CPU
NA_TILED_TESTS = _NA_DEVICE[::-1] + _NA_CPU
NA_FUSED_CPU_TESTS = ("tests/layers/test_na_cpu_fused.py",) + _NA_CPU
MS_TESTS = (
    "tests/layers/test_ms_deform_attn.py",
    "tests/layers/test_ms_deform_attn_cuda.py",
)
MS_DEVICE_TESTS = MS_TESTS[::-1]
FUSED_TESTS = ("tests/layers/test_na_fused.py",)


class Mutation(NamedTuple):
    name: str
    kernel: str  # what the mutated code is, for the table
    path: str  # relative to the repository root
    pattern: str  # exact text, or a regex when `regex`
    replacement: str
    tests: tuple[str, ...]
    regex: bool = False


def _m(name, kernel, path, pattern, replacement, tests, regex=False) -> Mutation:
    return Mutation(name, kernel, path, pattern, replacement, tests, regex)


INDEX = "native/na/na_index.h"
CPU = "native/na/na_cpu.cpp"
FUSED_CPU = "native/na/na_cpu_fused.cpp"
FUSED_CPU_AUTOGRAD = "native/na/na_cpu_fused_autograd.cpp"
DEVICE = "native/na/na_device.cuh"
TILED = "native/na/na_tiled.h"
SAMPLING = "native/ms_deform_attn/ms_deform_attn_sampling.h"
MS_CPU = "native/ms_deform_attn/ms_deform_attn_cpu.cpp"
MS_DEVICE = "native/ms_deform_attn/ms_deform_attn_device.cuh"
FUSED = "dinat_m2f/ops/na/fused_kernels.py"

# Written against the kernels of 2026-12-02; a kernel rewrite may need new patterns.
# fmt: off
MUTATIONS = [
    # --- index maths shared by the CPU and device kernels -------------------------------------
    _m("na_index: window end off by one", "NA index maths (CPU + device)", INDEX,
       "const int last = group_len - kernel;", "const int last = group_len - kernel - 1;",
       NA_TESTS),
    _m("na_index: window start not clamped at 0", "NA index maths (CPU + device)", INDEX,
       "if (start < 0) start = 0;", "if (start < 0) start = 1;", NA_TESTS),
    _m("na_index: dilation dropped from the window step", "NA index maths (CPU + device)", INDEX,
       "return {group + start * a.dilation, a.dilation,", "return {group + start * a.dilation, 1,",
       NA_TESTS),
    _m("na_index: group length off by one", "NA index maths (CPU + device)", INDEX,
       "return (a.length - group + a.dilation - 1) / a.dilation;",
       "return (a.length - group) / a.dilation;", NA_TESTS),
    _m("na_index: RPB index mirrored", "NA index maths (CPU + device)", INDEX,
       "start - pos + a.kernel - 1};", "pos - start + a.kernel - 1};", NA_TESTS),
    _m("na_index: inverse range misses the farthest query", "NA backward index maths", INDEX,
       "r.first_pos = r.key_pos - a.kernel + 1 < 0 ? 0 : r.key_pos - a.kernel + 1;",
       "r.first_pos = r.key_pos - a.kernel + 2 < 0 ? 0 : r.key_pos - a.kernel + 2;", NA_TESTS),
    # --- CPU kernels ---------------------------------------------------------------------------
    _m("na_cpu qk: RPB row and column swapped", "NA qk, CPU", CPU,
       "const int bias = (wh.bias_first + i) * bias_w + ww.bias_first + j;",
       "const int bias = (wh.bias_first + j) * bias_w + ww.bias_first + i;", NA_TESTS),
    _m("na_cpu av: weight of the next neighbour", "NA av, CPU", CPU,
       "axpy(Acc(a[head * K + n]),", "axpy(Acc(a[head * K + (n + 1) % K]),", NA_TESTS),
    _m("na_cpu inverse: the key's own row instead of the query's", "NA qk/av backward, CPU", CPU,
       "axpy(Acc(w[head * K]), source + t * row", "axpy(Acc(w[head * K]), source + s * row",
       NA_TESTS),
    _m("na_cpu rpb grad: last bias row dropped", "NA RPB backward, CPU", CPU,
       "if (i < 0 || i >= p.h.kernel) continue;", "if (i < 0 || i >= p.h.kernel - 1) continue;",
       NA_TESTS),
    _m("na_cpu_fused: dilation dropped from a group's positions", "NA fused, CPU", FUSED_CPU,
       "int index(int p) const { return group + p * dilation; }",
       "int index(int p) const { return group + p; }", NA_FUSED_CPU_TESTS),
    _m("na_cpu_fused: last window starts one key late", "NA fused, CPU", FUSED_CPU,
       "start[p] = (win.first - g) / a.dilation;",
       "start[p] = (win.first - g) / a.dilation + (p == length - 1);", NA_FUSED_CPU_TESTS),
    _m("na_cpu_fused forward: RPB column mirrored", "NA fused forward, CPU", FUSED_CPU,
       "C(r[br * cols + w.bias[c] + j])", "C(r[br * cols + w.bias[c] + kw - 1 - j])",
       NA_FUSED_CPU_TESTS),
    _m("na_cpu_fused backward: RPB gradient column mirrored", "NA fused backward, CPU",
       FUSED_CPU, "part[br * bias_cols + gw.bias[c] + j] +=",
       "part[br * bias_cols + gw.bias[c] + kw - 1 - j] +=", NA_FUSED_CPU_TESTS),
    _m("na_cpu_fused autograd: key and value gradients swapped", "NA fused autograd, CPU",
       FUSED_CPU_AUTOGRAD, "return {grad_query, grad_key, grad_value,",
       "return {grad_query, grad_value, grad_key,", NA_FUSED_CPU_TESTS),
    # --- device kernels (run on the emulated device) -------------------------------------------
    _m("na_device qk naive: RPB row and column swapped", "NA qk, device (naive)", DEVICE,
       "sum += Acc(rpb[head * bias_hw + (wh.bias_first + i) * bias_w + ww.bias_first + j]);",
       "sum += Acc(rpb[head * bias_hw + (wh.bias_first + j) * bias_w + ww.bias_first + i]);",
       NA_DEVICE_TESTS),
    _m("na_device av naive: weights transposed", "NA av, device (naive)", DEVICE,
       "sum += Acc(a[i * p.w.kernel + j])", "sum += Acc(a[j * p.h.kernel + i])",
       NA_DEVICE_TESTS),
    _m("na_device rpb grad: last bias column dropped", "NA RPB backward, device", DEVICE,
       "j >= 0 && j < p.w.kernel)", "j >= 0 && j < p.w.kernel - 1)", NA_DEVICE_TESTS),
    _m("na_device rpb grad: last reduction step dropped", "NA RPB backward, device", DEVICE,
       "stride > 0; stride /= 2)", "stride > 1; stride /= 2)", NA_DEVICE_TESTS),
    _m("na_device inverse: slot of the neighbouring key", "NA qk/av backward, device", DEVICE,
       "Acc(weights[(t * p.heads + head) * K + slot])",
       "Acc(weights[(t * p.heads + head) * K + (slot + 1) % K])", NA_DEVICE_TESTS),
    _m("na_tiled: key box one column short", "NA qk/av, device (tiled)", TILED,
       "out->box_len = last_start + a.kernel - out->box_start;",
       "out->box_len = last_start + a.kernel - 1 - out->box_start;", NA_TILED_TESTS),
    _m("na_tiled: dilation dropped from the key box rows", "NA qk/av, device (tiled)", TILED,
       "t.h.token(t.h.box_start + bh, p.h.dilation)", "t.h.token(t.h.box_start + bh, 1)",
       NA_TILED_TESTS),
    _m("na_tiled: RPB index mirrored", "NA qk, device (tiled)", TILED,
       "+ slot - (first_pos + q) + kernel - 1;", "- slot + (first_pos + q) + kernel - 1;",
       NA_TILED_TESTS),
    # --- multi-scale deformable attention --------------------------------------------------------
    _m("ms sampling: pixel centres at integers (no -0.5)", "MSDeformAttn sampling (CPU + device)",
       SAMPLING, "const Acc px = x * Acc(width) - Acc(0.5);", "const Acc px = x * Acc(width);",
       MS_TESTS),
    _m("ms sampling: wrong bilinear weight of a corner", "MSDeformAttn sampling (CPU + device)",
       SAMPLING, "token + width, fy * gx, -fy, gx}", "token + width, fy * fx, -fy, gx}", MS_TESTS),
    _m("ms sampling: location gradient not scaled by the map size",
       "MSDeformAttn backward (CPU + device)", SAMPLING,
       "return attention * corner_sum * Acc(extent);", "return attention * corner_sum;", MS_TESTS),
    _m("ms_cpu backward: x and y derivatives swapped", "MSDeformAttn backward, CPU", MS_CPU,
       "gy += corners[c].d_y * dv;", "gy += corners[c].d_x * dv;", MS_TESTS),
    _m("ms_device forward: corner weight dropped", "MSDeformAttn forward, device", MS_DEVICE,
       "sum += a * corners[c].weight * Acc(", "sum += a * Acc(", MS_DEVICE_TESTS),
    _m("ms_device backward: x and y derivatives swapped", "MSDeformAttn backward, device",
       MS_DEVICE, "gx += corners[c].d_x * dv;", "gx += corners[c].d_y * dv;", MS_DEVICE_TESTS),
    _m("ms_cpu forward: last sampling point dropped", "MSDeformAttn forward, CPU", MS_CPU,
       r"(for \(int l = 0; l < p\.levels; \+\+l\) \{\s*for \(int s = l \* p\.points; s < )"
       r"\(l \+ 1\) \* p\.points;", r"\1(l + 1) * p.points - 1;", MS_TESTS, regex=True),
    # --- fused Triton kernels (no rebuild: Python) ----------------------------------------------
    _m("fused: window start not clamped at the end", "NA fused (Triton)", FUSED,
       "return tl.minimum(tl.maximum(pos - kernel // 2, 0), group_len - kernel)",
       "return tl.maximum(pos - kernel // 2, 0)", FUSED_TESTS),
    _m("fused: RPB column index off by one", "NA fused (Triton)", FUSED,
       "        bias_w = key_w[None, :] - pos_w[:, None] + (KW - 1)\n        s +=",
       "        bias_w = key_w[None, :] - pos_w[:, None] + (KW - 2)\n        s +=", FUSED_TESTS),
]
# fmt: on


def run_order(mutations: list[Mutation]) -> list[Mutation]:
    """One mutation of each file first, then the rest: a --budget run covers every kernel."""
    seen: set[str] = set()
    first = [m for m in mutations if not (m.path in seen or seen.add(m.path))]
    return first + [m for m in mutations if m not in first]


def mutate(text: str, m: Mutation) -> str:
    """`text` with the mutation applied; ValueError unless its pattern occurs exactly once."""
    pattern = m.pattern if m.regex else re.escape(m.pattern)
    found = len(re.findall(pattern, text))
    if found != 1:
        raise ValueError(
            f"{m.name}: the pattern occurs {found} times in {m.path} (must be exactly once): "
            f"{m.pattern!r}"
        )
    replacement = m.replacement if m.regex else m.replacement.replace("\\", "\\\\")
    return re.sub(pattern, replacement, text, count=1)


def copy_tree(destination: str) -> None:
    """The files git tracks, as they are in the working tree, plus the extension's build."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in (f.decode() for f in files if f):
        source = os.path.join(ROOT, name)
        if not os.path.isfile(source):
            continue  # deleted in the working tree
        target = os.path.join(destination, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)


EXTENSIONS = ("_C", "_C_testing")  # dinat_m2f/<name>.*.so: what setup.py builds


def build(tree: str, jobs: int) -> tuple[bool, str]:
    """CPU-only setup.py build_ext --inplace of both extensions; ninja recompiles only the
    objects whose sources (or included headers) changed."""
    env = {**os.environ, "FORCE_CUDA": "0", "MAX_JOBS": str(jobs)}
    result = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    log = result.stdout[-3000:] + result.stderr[-3000:]
    built = {f.split(".")[0] for f in os.listdir(os.path.join(tree, "dinat_m2f"))}
    missing = [e for e in EXTENSIONS if e not in built]
    if result.returncode == 0 and missing:
        return False, f"built no {missing} (the tests of those would be skipped, not failed)"
    return result.returncode == 0, log


def build_outputs(tree: str) -> list[str]:
    """The build's outputs: build/ (objects, ninja's log) and the extensions in dinat_m2f/."""
    package = os.path.join(tree, "dinat_m2f")
    names = [f for f in os.listdir(package) if f.split(".")[0] in EXTENSIONS]
    return [os.path.join(tree, "build")] + [os.path.join(package, f) for f in names]


def snapshot(tree: str, store: str) -> None:
    """Keeps the unmutated build's outputs (with their times) in `store`."""
    for path in build_outputs(tree):
        target = os.path.join(store, os.path.relpath(path, tree))
        if os.path.isdir(path):
            shutil.copytree(path, target, copy_function=shutil.copy2)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(path, target)


def restore(tree: str, store: str) -> None:
    """Puts the unmutated build back: with the mutated source restored to its old text and
    time, ninja finds every object up to date, so the next mutant recompiles only what it
    changes (instead of also recompiling the previous mutant's files back)."""
    for path in build_outputs(tree):
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    snapshot(store, tree)


def run_tests(tree: str, tests: tuple[str, ...], timeout: int) -> tuple[int, str]:
    """pytest -x on `tests` in `tree`: (exit status, the first failing test or the summary)."""
    env = {
        **os.environ,
        "PYTHONPATH": tree,
        "DINAT_M2F_REQUIRE_NATIVE": "1",
        "TRITON_INTERPRET": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # a restored .py is never run from a mutant's .pyc
    }
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        result = subprocess.run(
            command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout} s"
    failed = re.findall(r"^FAILED (.+?)(?: - |$)", result.stdout, re.MULTILINE)
    summary = result.stdout.strip().splitlines()[-1:] or ["(no output)"]
    if result.returncode < 0:
        return result.returncode, f"crashed with signal {-result.returncode}"
    return result.returncode, failed[0] if failed else summary[0]


class Row(NamedTuple):
    mutation: Mutation
    outcome: str  # "caught", "NOT CAUGHT", "error", "not run"
    detail: str
    seconds: float


def caught_before(path: str) -> dict[str, tuple[str, float]]:
    """Mutations a previous --table file reports caught: name -> (first failing test, s)."""
    found = {}
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if len(cells) == 6 and cells[3] == "caught":
                found[cells[0]] = (cells[4].strip("`").replace("\\|", "|"),
                                   float(cells[5].split()[0]))  # fmt: skip
    return found


def table(rows: list[Row], total: float) -> str:
    lines = [
        "| mutation | kernel | file | outcome | first failing test | time |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        detail = r.detail.replace("|", "\\|")
        lines.append(
            f"| {r.mutation.name} | {r.mutation.kernel} | `{r.mutation.path}` | {r.outcome} "
            f"| `{detail}` | {r.seconds:.0f} s |"
        )
    caught = sum(r.outcome == "caught" for r in rows)
    not_run = sum(r.outcome == "not run" for r in rows)
    lines.append("")
    lines.append(
        f"{caught} of {len(rows)} mutants caught"
        + (f" ({not_run} not run)" if not_run else "")
        + f"; {total / 60:.0f} min in all."
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run the mutations whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--jobs", type=int, default=1, help="parallel compile jobs (MAX_JOBS)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per test run")
    parser.add_argument("--keep", default="", help="scratch folder to use and keep")
    parser.add_argument("--table", default="", help="also write the result table to this file")
    parser.add_argument(
        "--budget",
        type=float,
        default=0,
        help="start no mutant after this many minutes (the rest: 'not run', exit status 2)",
    )
    parser.add_argument(
        "--resume",
        default="",
        help="a previous run's --table file: the mutants it reports caught are not run again",
    )
    args = parser.parse_args(argv)

    selected = [m for m in MUTATIONS if args.only in m.name]
    if not selected:
        parser.error(f"--only {args.only!r} matches no mutation")
    # every pattern is checked before anything is built
    originals = {}
    try:
        for m in selected:
            text = originals.setdefault(m.path, open(os.path.join(ROOT, m.path)).read())
            mutate(text, m)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.list:
        for m in selected:
            print(f"{m.name}  [{m.path}]")
        return 0

    start = time.time()
    tree = args.keep or tempfile.mkdtemp(prefix="mutation_check_")
    os.makedirs(tree, exist_ok=True)
    copy_tree(tree)
    print(f"scratch tree: {tree}", flush=True)
    ok, log = build(tree, args.jobs)
    if not ok:
        print(f"error: the unmutated tree does not build:\n{log}", file=sys.stderr)
        return 2
    store = tempfile.mkdtemp(prefix="mutation_check_build_")
    snapshot(tree, store)
    suites = sorted({t for m in selected for t in m.tests})
    status, detail = run_tests(tree, tuple(suites), args.timeout)
    if status != 0:
        print(f"error: the unmutated kernel tests fail ({detail})", file=sys.stderr)
        return 2
    print(f"baseline: the kernel tests pass ({detail}); {time.time() - start:.0f} s", flush=True)

    rows = []
    done = caught_before(args.resume) if args.resume else {}
    for m in run_order(selected):
        if m.name in done:
            rows.append(Row(m, "caught", *done[m.name]))
            continue
        began = time.time()
        if args.budget and began - start > args.budget * 60:
            rows.append(Row(m, "not run", f"past --budget {args.budget} min", 0.0))
            continue
        path = os.path.join(tree, m.path)
        with open(path) as f:
            original = f.read()
        times = os.stat(path)
        try:
            with open(path, "w") as f:
                f.write(mutate(original, m))
            built, log = (True, "") if m.path.endswith(".py") else build(tree, args.jobs)
            if not built:
                row = Row(m, "error", "the mutant does not compile", time.time() - began)
            else:
                status, detail = run_tests(tree, m.tests, args.timeout)
                outcome = "NOT CAUGHT" if status == 0 else "caught"
                if status in (2, 3, 4, 5):  # interrupted, internal error, usage, no tests
                    outcome = "error"
                row = Row(m, outcome, detail, time.time() - began)
        finally:
            with open(path, "w") as f:
                f.write(original)
            os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
            if not m.path.endswith(".py"):
                restore(tree, store)
        rows.append(row)
        print(f"{row.outcome:10s} {m.name}: {row.detail} ({row.seconds:.0f} s)", flush=True)

    result = table(rows, time.time() - start)
    print()
    print(result)
    if args.table:
        with open(args.table, "w") as f:
            f.write(result + "\n")
    shutil.rmtree(store, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(tree, ignore_errors=True)
    if any(r.outcome in ("error", "not run") for r in rows):
        return 2
    return 1 if any(r.outcome == "NOT CAUGHT" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
