#!/usr/bin/env python
"""Property-based fuzzing (hypothesis) of every public op: na1d / na2d (every backend),
na1d_qk / na2d_qk / na1d_av / na2d_av, ms_deform_attn; on the CPU kernels and on the emulated
device (the CUDA kernels on CPU threads).

Each example draws a valid call (random ranks, shapes, dtypes, strides, kernel sizes,
dilations, empty and huge-but-cheap sizes) and, most of the time, breaks exactly one argument
(a wrong size, dtype, device, rank or type). The property: a valid call returns the
brute-force oracle's result (float64, on the same rounded inputs) within the dtype's
tolerance; a broken one raises ValueError or TypeError whose message names the broken
argument. Anything else fails, and a crash kills this process: the test-suite runs it in a
child process (tests/layers/test_fuzz_ops.py) and fails on any exit other than 0.

The expected results come from the brute-force oracles of tests/ (tests/na_brute_force.py,
tests/ms_deform_attn_brute_force.py: float64, written from the definitions), never from one of
the package's own implementations (the "reference" backend is one of the backends fuzzed).
Each valid call also checks which implementation computed it (record_implementations): the
backend it asked for, "auto" on CPU tensors the C++ kernels.

    python tools/fuzz_ops.py --op na --examples 2000            # a long run
    python tools/fuzz_ops.py --op all --examples 200 --seed 3 --device emulated
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

if "torch" not in sys.modules and not os.environ.get("CUDA_VISIBLE_DEVICES"):
    os.environ.setdefault("TRITON_INTERPRET", "1")  # the fused kernels on CPU tensors
# the repository root, for tests/emulated_device.py (the emulated device is test-only)
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import torch  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dinat_m2f.layers import (  # noqa: E402
    ms_deform_attn,
    na1d,
    na1d_av,
    na1d_qk,
    na2d,
    na2d_av,
    na2d_qk,
)
from dinat_m2f.ops.library import (  # noqa: E402
    FUSED_NA_DEVICES,
    native_backends,
    record_implementations,
)
from tests import na_brute_force  # noqa: E402
from tests.emulated_device import use_emulated_device  # noqa: E402
from tests.ms_deform_attn_brute_force import ms_deform_attn_brute_force  # noqa: E402

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9, torch.float16: 1e-2, torch.bfloat16: 4e-2}
FUNCTIONS = {1: (na1d, na1d_qk, na1d_av), 2: (na2d, na2d_qk, na2d_av)}


@dataclass
class Stats:
    cases: Counter = field(default_factory=Counter)

    def count(self, op: str, outcome: str) -> None:
        self.cases[f"{op}: {outcome}"] += 1


STATS = Stats()


def _strided(x: torch.Tensor, data) -> torch.Tensor:
    """`x`, or the same values in a non-contiguous layout."""
    if x.dim() < 2 or not data.draw(st.booleans(), label="non-contiguous"):
        return x
    return x.transpose(0, -1).contiguous().transpose(0, -1)


def _check_error(error: Exception, names: set[str], op: str) -> None:
    message = str(error)
    assert isinstance(error, (ValueError, TypeError)), (
        f"{op}: {type(error).__name__} instead of ValueError/TypeError: {message}"
    )
    assert any(name in message for name in names), (
        f"{op}: the error does not name any of {sorted(names)}: {message}"
    )


def _native(emulated: bool, family: str) -> str:
    """What record_implementations names the kernels of a CPU-tensor call."""
    if emulated:
        return "emulated"
    return "native" if "CPU" in native_backends(family) else "pure-pytorch"


def _compare(op: str, got: torch.Tensor, expected: torch.Tensor, dtype) -> None:
    assert got.shape == expected.shape and got.dtype == dtype, (
        f"{op}: got {tuple(got.shape)} {got.dtype}, expected {tuple(expected.shape)} {dtype}"
    )
    if expected.numel():
        err = (got.double() - expected).abs().max().item() / max(1.0, expected.abs().max().item())
        assert err <= TOLERANCE[dtype], f"{op}: relative error {err:.2e} > {TOLERANCE[dtype]}"


# ---------------------------------------------------------------------------------------------
# neighborhood attention


@dataclass
class NaCall:
    rank: int
    kernel: tuple
    dilation: tuple
    query: object
    key: object
    value: object
    rpb: object
    backend: object
    broken: set  # names of the broken arguments (empty: a valid call)


def draw_na_call(data, emulated: bool) -> NaCall:
    rank = data.draw(st.sampled_from([1, 2]), label="rank")
    kernel = tuple(data.draw(st.sampled_from([3, 5, 7, 9, 11, 13]), label="k") for _ in range(rank))
    dilation = tuple(data.draw(st.integers(1, 4), label="d") for _ in range(rank))
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    huge_but_empty = data.draw(st.integers(0, 9), label="huge") == 0
    batch = 0 if huge_but_empty else data.draw(st.integers(1, 2), label="batch")
    limit = 12 if emulated else 16
    spatial = tuple(
        (k * d) * (40 if huge_but_empty else 1) + data.draw(st.integers(0, limit), label="extra")
        for k, d in zip(kernel, dilation)
    )
    heads = data.draw(st.integers(1, 3), label="heads")
    dim = data.draw(st.sampled_from([4, 16, 32]), label="dim")
    dim_v = data.draw(st.sampled_from([dim, 16]), label="dim_v")
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), label="seed"))

    def tokens(last):
        return torch.randn(batch, *spatial, heads, last, generator=g).to(dtype)

    query, key, value = tokens(dim), tokens(dim), tokens(dim_v)
    rpb = (
        torch.randn(heads, *(2 * k - 1 for k in kernel), generator=g).to(dtype)
        if data.draw(st.booleans(), label="rpb")
        else None
    )
    backends = [None, None, "unfused", "reference"] + ([] if emulated else ["fused", "auto"])
    backend = data.draw(st.sampled_from(backends), label="backend")
    if backend == "fused" and (
        dtype == torch.float64 or min(dim, dim_v) < 16 or batch == 0 or math.prod(spatial) > 600
    ):
        backend = "unfused"  # valid calls only; "fused" refusals are a perturbation below
    call = NaCall(rank, kernel, dilation, query, key, value, rpb, backend, set())
    return _perturb_na(call, data, g)


def _perturb_na(call: NaCall, data, g) -> NaCall:
    q = call.query
    choice = data.draw(st.integers(0, 21), label="perturbation")  # 11..21: valid
    if choice == 0:
        call.kernel = data.draw(
            st.sampled_from(
                [
                    (4,) * call.rank,
                    (1,) * call.rank,
                    (3,) * (call.rank + 1),
                    (3.0,) * call.rank,
                    (True,) * call.rank,
                    "3",
                ]
            ),
            label="bad k",
        )
        call.broken = {"kernel_size"}
    elif choice == 1:
        call.dilation = data.draw(
            st.sampled_from([(0,) * call.rank, (-1,) * call.rank, (1,) * (call.rank + 1)]),
            label="bad d",
        )
        call.broken = {"dilation"}
    elif choice == 2:  # an axis shorter than kernel * dilation
        axis = data.draw(st.integers(0, call.rank - 1), label="axis")
        short = call.kernel[axis] * call.dilation[axis] - 1
        call.query, call.key, call.value = (
            x.narrow(1 + axis, 0, short) for x in (call.query, call.key, call.value)
        )
        call.broken = {"query", "value", "kernel_size", "dilation"}
    elif choice == 3:
        call.key = torch.cat([call.key, call.key[:, :1]], dim=1)
        call.broken = {"key"}
    elif choice == 4:
        other = torch.float64 if q.dtype != torch.float64 else torch.float32
        call.key = call.key.to(other)
        call.broken = {"key"}
    elif choice == 5:
        call.key = call.key.to("meta")
        call.broken = {"key"}
    elif choice == 6:
        call.value = (
            call.value[..., :1, :]
            if q.shape[-2] > 1
            else call.value.repeat(*([1] * (q.dim() - 2)), 2, 1)
        )
        call.broken = {"value"}
    elif choice == 7:
        bad = data.draw(st.sampled_from(["int", "rank", "list"]), label="bad q")
        call.query = {
            "int": lambda: q.to(torch.int64),
            "rank": lambda: q.flatten(0, 1),
            "list": q.tolist,
        }[bad]()
        call.broken = {"query"}
    elif choice == 8:
        heads = q.shape[-2]
        bad = [
            torch.zeros(heads + 1, *(2 * k - 1 for k in call.kernel)),
            torch.zeros(heads, *(2 * k + 1 for k in call.kernel)),
            "bias",
        ]
        if call.rpb is not None:
            other = torch.float64 if q.dtype != torch.float64 else torch.float32
            bad.append(call.rpb.to(other))
        call.rpb = data.draw(st.sampled_from(bad), label="bad rpb")
        if (
            isinstance(call.rpb, torch.Tensor)
            and call.rpb.dtype != torch.float64
            and call.rpb.shape[0] == heads + 1
        ):
            call.rpb = call.rpb.to(q.dtype)
        call.broken = {"rpb"}
    elif choice == 9:
        call.backend = data.draw(st.sampled_from(["triton", "", "FUSED"]), label="bad backend")
        call.broken = {"backend"}
    elif (
        choice == 10
        and call.backend is not None
        and call.query.dtype == torch.float64
        and call.rank in (1, 2)
    ):
        call.backend = "fused"  # float64: the fused kernels refuse it by name
        call.broken = {"backend"}
    else:  # a valid call, maybe with non-contiguous tensors
        call.query, call.key, call.value = (
            _strided(x, data) for x in (call.query, call.key, call.value)
        )
    return call


def check_na(data, emulated: bool) -> None:
    call = draw_na_call(data, emulated)
    na, qk, av = FUNCTIONS[call.rank]
    kernel, dilation = call.kernel, call.dilation
    unfused_ops = call.backend is None and data.draw(st.booleans(), label="qk/av")
    op = f"na{call.rank}d" + ("_qk/av" if unfused_ops else "")
    context = use_emulated_device() if emulated else contextlib.nullcontext()
    try:
        with context, record_implementations() as ran:
            if unfused_ops:
                logits = qk(call.query, call.key, kernel, dilation=dilation, rpb=call.rpb)
                half = logits.dtype in (torch.float16, torch.bfloat16)
                weights = (
                    logits.float().softmax(-1).to(logits.dtype) if half else logits.softmax(-1)
                )
                got = av(weights, call.value, kernel, dilation=dilation)
            else:
                got = na(
                    call.query,
                    call.key,
                    call.value,
                    kernel,
                    dilation=dilation,
                    rpb=call.rpb,
                    backend=call.backend,
                )
    except Exception as error:  # noqa: BLE001 (classified below)
        if not call.broken:
            raise AssertionError(
                f"{op}: a valid call raised {type(error).__name__}: {error}"
            ) from error
        _check_error(error, call.broken, op)
        STATS.count(op, f"refused {type(error).__name__}")
        return
    assert not call.broken, f"{op}: broken {sorted(call.broken)} accepted"
    kernels = [f"na_qk:{_native(emulated, 'na')}", f"na_av:{_native(emulated, 'na')}"]
    # "auto" on CPU tensors: the fused C++ kernels where the extension has them
    auto = (
        ["na:fused_cpu"] if not emulated and "CPU" in FUSED_NA_DEVICES else ["na:unfused", *kernels]
    )
    expected_ran = {
        None: auto,
        "auto": auto,
        "unfused": ["na:unfused", *kernels],
        "fused": ["na:fused"],
        "reference": ["na:reference"],
    }[call.backend]
    assert ran == (kernels if unfused_ops else expected_ran), (
        f"{op} backend={call.backend!r}: ran {ran}, expected {expected_ran}"
    )
    q, k, v, rpb = (
        None if x is None else x.double() for x in (call.query, call.key, call.value, call.rpb)
    )
    scale = 1.0 if unfused_ops else q.shape[-1] ** -0.5
    logits = na_brute_force.qk(q * scale, k, kernel, dilation, rpb)
    if unfused_ops:  # the logits went through the dtype before the softmax
        logits = logits.to(call.query.dtype).double()
    expected = na_brute_force.av(logits.softmax(-1), v, kernel, dilation)
    _compare(op, got, expected, call.query.dtype)
    STATS.count(op, "matched the brute-force oracle")


# ---------------------------------------------------------------------------------------------
# multi-scale deformable attention


def check_ms_deform_attn(data, emulated: bool) -> None:
    levels = data.draw(st.integers(1, 3), label="levels")
    shapes = [
        (data.draw(st.integers(1, 7), label="h"), data.draw(st.integers(1, 7), label="w"))
        for _ in range(levels)
    ]
    batch = data.draw(st.integers(0, 2), label="batch")
    heads, dim = (
        data.draw(st.integers(1, 3), label="heads"),
        data.draw(st.integers(1, 16), label="dim"),
    )
    points, len_q = (
        data.draw(st.integers(1, 3), label="points"),
        data.draw(st.integers(0, 6), label="q"),
    )
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), label="seed"))
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    sizes = spatial_shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    value = torch.randn(batch, int(sizes.sum()), heads, dim, generator=g).to(dtype)
    locations = (torch.rand(batch, len_q, heads, levels, points, 2, generator=g) * 1.4 - 0.2).to(
        dtype
    )
    weights = torch.rand(batch, len_q, heads, levels, points, generator=g).to(dtype)
    args = dict(
        value=value,
        spatial_shapes=spatial_shapes,
        level_start_index=starts,
        sampling_locations=locations,
        attention_weights=weights,
    )
    broken: set = set()
    choice = data.draw(st.integers(0, 19), label="perturbation")  # 10..19: valid
    if choice == 0:
        args["value"] = torch.cat([value, value[:, :1]], 1)
        broken = {"value", "spatial_shapes"}
    elif choice == 1:
        args["spatial_shapes"] = spatial_shapes + torch.tensor([1, 0])
        broken = {"spatial_shapes"}
    elif choice == 2 and levels > 1:
        args["level_start_index"] = starts + 1
        broken = {"level_start_index"}
    elif choice == 3:
        args["spatial_shapes"] = spatial_shapes.int()
        broken = {"spatial_shapes"}
    elif choice == 4:
        other = torch.float64 if dtype != torch.float64 else torch.float32
        args["sampling_locations"] = locations.to(other)
        broken = {"sampling_locations"}
    elif choice == 5:
        args["attention_weights"] = weights[..., :1] if points > 1 else torch.cat([weights] * 2, -1)
        broken = {"attention_weights", "sampling_locations"}
    elif choice == 6:
        args["value"] = value[..., :1, :] if heads > 1 else torch.cat([value] * 2, 2)
        broken = {"value", "sampling_locations"}
    elif choice == 7:
        args["sampling_locations"] = locations[..., 0]
        broken = {"sampling_locations"}
    elif choice == 8:
        args["value"] = value.to(torch.int64)
        broken = {"value"}
    elif choice == 9:
        args["attention_weights"] = weights.to("meta")
        broken = {"attention_weights"}
    else:
        args = {name: _strided(x, data) if x.is_floating_point() else x for name, x in args.items()}
    op = "ms_deform_attn"
    context = use_emulated_device() if emulated else contextlib.nullcontext()
    try:
        with context, record_implementations() as ran:
            got = ms_deform_attn(**args)
    except Exception as error:  # noqa: BLE001 (classified below)
        if not broken:
            raise AssertionError(
                f"{op}: a valid call raised {type(error).__name__}: {error}"
            ) from error
        _check_error(error, broken, op)
        STATS.count(op, f"refused {type(error).__name__}")
        return
    assert not broken, f"{op}: broken {sorted(broken)} accepted"
    assert ran == [f"ms_deform_attn:{_native(emulated, 'ms_deform_attn')}"], ran
    expected = ms_deform_attn_brute_force(
        *(x.double() if x.is_floating_point() else x for x in args.values())
    )
    _compare(op, got, expected, dtype)
    STATS.count(op, "matched the brute-force oracle")


CHECKS = {"na": check_na, "ms_deform_attn": check_ms_deform_attn}


def run(op: str, examples: int, seed_value: int, emulated: bool) -> None:
    @seed(seed_value)
    @settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.data())
    def fuzz(data):
        CHECKS[op](data, emulated)

    fuzz()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", default="all", choices=["all", *CHECKS])
    parser.add_argument("--examples", type=int, default=200, help="examples per op")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "emulated"])
    args = parser.parse_args(argv)
    if args.examples < 1:
        parser.error(f"--examples must be >= 1, got {args.examples}")
    ops = list(CHECKS) if args.op == "all" else [args.op]
    for op in ops:
        run(op, args.examples, args.seed, args.device == "emulated")
    for outcome, count in sorted(STATS.cases.items()):
        print(f"{count:6d}  {outcome}")
    print(f"PASS {sum(STATS.cases.values())} cases ({args.device}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
