"""The fused Triton NA kernels (forward with online softmax, backward recomputing the scores,
RPB inside) against the brute-force oracle and the unfused path: output and every gradient,
kernels 3..13, dilations 1..4, non-square maps, sizes not multiples of the dilation, with and
without RPB, 1D and 2D, float32 / float16 / bfloat16, the module's padding for small inputs.
Each test runs where the fused kernels run (tests/devices.py): compiled on a GPU ("cuda"), or
in Triton's interpreter on CPU tensors without one ("interpreter"); the other skips by name.

Tolerances (max abs error relative to max(1, max |reference|), inputs rounded to the dtype
first): float32 2e-5, float16 1e-2, bfloat16 4e-2.
"""

import dataclasses
import math
import os
import subprocess
import sys

import pytest
import torch

import tests.na_brute_force as brute
from dinat_m2f.layers import NeighborhoodAttention2D, na1d, na2d
from dinat_m2f.ops.library import FUSED_NA_DEVICES, native_backends, record_implementations
from dinat_m2f.ops.na import dispatch, fused, fused_plan
from tests import devices

TOLERANCE = {torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 4e-2}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEVICES = devices.fused_devices()

# (spatial, kernel, dilation, heads, dim, dim_v, rpb)
CASES = [
    ((9, 10), (3, 3), (1, 1), 2, 32, 32, True),
    ((13, 17), (3, 5), (2, 3), 1, 16, 24, True),  # non-square kernel, dims not powers of 2
    ((15, 14), (7, 7), (2, 2), 2, 32, 32, True),  # sizes not multiples of the dilation
    ((11, 29), (9, 5), (1, 4), 1, 32, 32, False),
    ((22, 23), (11, 11), (2, 1), 1, 32, 32, True),
    ((13, 27), (13, 13), (1, 2), 1, 16, 16, True),
    ((20, 13), (5, 3), (4, 4), 1, 64, 64, True),
    ((23,), (5,), (3,), 2, 32, 32, True),  # 1D
    ((40,), (13,), (3,), 1, 16, 16, False),
    ((7, 7), (7, 7), (1, 1), 1, 80, 80, True),  # head dim > 64: 16 x 64 blocks, 8 warps
]


def case_id(case):
    spatial, kernel, dilation, heads, dim, dim_v, rpb = case
    return (
        f"L{'x'.join(map(str, spatial))}-k{'x'.join(map(str, kernel))}-"
        f"d{'x'.join(map(str, dilation))}-D{dim}-Dv{dim_v}" + ("-rpb" if rpb else "")
    )


def make_inputs(case, batch=2, seed=0):
    spatial, kernel, _, heads, dim, dim_v, with_rpb = case
    g = torch.Generator().manual_seed(seed)
    q, k = (
        torch.randn(batch, *spatial, heads, dim, generator=g, dtype=torch.float64) for _ in range(2)
    )
    v = torch.randn(batch, *spatial, heads, dim_v, generator=g, dtype=torch.float64)
    rpb = (
        torch.randn(heads, *(2 * x - 1 for x in kernel), generator=g, dtype=torch.float64)
        if with_rpb
        else None
    )
    return q, k, v, rpb


def outputs_and_grads(fn, tensors, device, dtype):
    leaves = [None if x is None else x.detach().to(device, dtype).requires_grad_() for x in tensors]
    out = fn(*leaves)
    g = torch.Generator().manual_seed(1)
    out.backward(torch.randn(out.shape, generator=g, dtype=torch.float64).to(out))
    return [out.detach()] + [None if x is None else x.grad for x in leaves]


def assert_close_relative(got, expected, tol, names=("out", "dq", "dk", "dv", "drpb")):
    for name, a, b in zip(names, got, expected):
        if b is None:
            assert a is None
            continue
        err = (a.double().cpu() - b).abs().max().item() / max(1.0, b.abs().max().item())
        assert err <= tol, f"{name}: relative max error {err:.2e} > {tol:.0e}"


# every case in float32; float16 and bfloat16 on a subset (interpreter time)
PRECISION_CASES = [(c, torch.float32) for c in CASES] + [
    (c, dtype) for dtype in (torch.float16, torch.bfloat16) for c in (CASES[0], CASES[2], CASES[7])
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "case,dtype", PRECISION_CASES, ids=[f"{case_id(c)}-{str(d)[6:]}" for c, d in PRECISION_CASES]
)
def test_fused_matches_brute_force(case, dtype, device):
    spatial, kernel, dilation = case[:3]
    rounded = [None if x is None else x.to(dtype).double() for x in make_inputs(case)]
    scale = case[4] ** -0.5
    expected = outputs_and_grads(
        lambda q, k, v, rpb: brute.na(q, k, v, kernel, dilation, rpb, scale=scale),
        rounded,
        "cpu",
        torch.float64,
    )
    na = na2d if len(spatial) == 2 else na1d
    got = outputs_and_grads(
        lambda q, k, v, rpb: na(q, k, v, kernel, dilation=dilation, rpb=rpb, backend="fused"),
        rounded,
        device,
        dtype,
    )
    for x in got:
        assert x is None or (x.dtype == dtype and x.device.type == device)
    assert_close_relative(got, expected, TOLERANCE[dtype])


@pytest.mark.parametrize("device", DEVICES)
def test_fused_equals_unfused_path(device):
    case = CASES[2]
    q, k, v, rpb = make_inputs(case, seed=5)
    kernel, dilation = case[1], case[2]

    def run(backend):
        return outputs_and_grads(
            lambda q, k, v, rpb: na2d(q, k, v, kernel, dilation=dilation, rpb=rpb, backend=backend),
            [q, k, v, rpb],
            device,
            torch.float32,
        )

    assert_close_relative(run("fused"), [x.double().cpu() for x in run("unfused")], 2e-5)


def saved_bytes(fn, *tensors):
    """Bytes of the distinct storages autograd keeps for the backward of fn(*tensors)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*tensors)
    return storages


@pytest.mark.parametrize("device", DEVICES)
def test_fused_keeps_no_attention_map_for_the_backward(device):
    """The fused path keeps the inputs, the output and a float32 log-sum-exp per query; the
    unfused one also keeps the (tokens x heads x k*k) attention map."""
    spatial, kernel, heads, dim = (21, 22), 7, 2, 32
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, *spatial, heads, dim, generator=g).to(device).requires_grad_()
        for _ in range(3)
    )
    rpb = torch.randn(heads, 13, 13, generator=g).to(device).requires_grad_()
    tokens = math.prod(spatial) * heads

    fused_saved = saved_bytes(
        lambda *x: na2d(*x[:3], kernel, dilation=3, rpb=x[3], backend="fused"), q, k, v, rpb
    )
    inputs = 3 * tokens * dim * 4 + rpb.numel() * 4
    assert sum(fused_saved.values()) == inputs + tokens * dim * 4 + tokens * 4  # + out + lse
    assert max(fused_saved.values()) < tokens * kernel * kernel * 4

    unfused_saved = saved_bytes(
        lambda *x: na2d(*x[:3], kernel, dilation=3, rpb=x[3], backend="unfused"), q, k, v, rpb
    )
    assert max(unfused_saved.values()) == tokens * kernel * kernel * 4


@pytest.mark.parametrize("device", DEVICES)
def test_module_pads_small_inputs_on_the_fused_path(monkeypatch, device):
    torch.manual_seed(0)
    module = NeighborhoodAttention2D(dim=64, num_heads=2, kernel_size=7, dilation=3)
    module = module.eval().to(device)
    x = torch.randn(2, 9, 25, 64, device=device)  # height 9 < 7 * 3: padded to 21
    monkeypatch.setenv(dispatch.BACKEND_ENV, "unfused")
    expected = module(x)
    monkeypatch.setenv(dispatch.BACKEND_ENV, "fused")
    calls = []
    real = fused.attention
    monkeypatch.setattr(fused, "attention", lambda *a: calls.append(a) or real(*a))
    torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    assert len(calls) == 1 and calls[0][0].shape[1:3] == (21, 25)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    q = torch.randn(0, 9, 9, 2, 32, device=device)
    assert na2d(q, q, q, 3, backend="fused").shape == q.shape


def test_launch_is_planned_from_symbolic_sizes():
    """On a GPU the op is a triton_op, whose body torch.compile and opcheck's dynamic test
    trace with symbolic sizes (first seen failing on an H200: "unhashable type: non-nested
    SymInt" from the cached tile plan). The interpreter's op is opaque, so this builds the
    launch from symbolic fake tensors directly: the plan and arguments of the concrete
    problem, with batch and heads left symbolic."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import (
        DimDynamic,
        ShapeEnv,
        StatelessSymbolicContext,
    )

    real = torch.empty(2, 9, 11, 3, 32)
    dynamic = StatelessSymbolicContext(dynamic_sizes=[DimDynamic.DYNAMIC] * real.dim())
    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        q = mode.from_tensor(real, symbolic_context=dynamic)
        assert all(isinstance(n, torch.SymInt) for n in q.shape)
        traced = fused.Problem(q, q, [3, 5], [2, 1])
        out, lse = traced.tokens_like(q, 32), traced.tokens_like(q, None, torch.float32)
        call = traced.forward_call(q, q, q, None, out, lse, 0.5)
    concrete = fused.Problem(real, real, [3, 5], [2, 1])
    expected = concrete.forward_call(*(real,) * 3, None, real, real[..., 0], 0.5)
    assert traced.plan == concrete.plan
    assert isinstance(traced.batch, torch.SymInt) and isinstance(traced.heads, torch.SymInt)
    assert {k: v for k, v in call.kwargs.items() if k != "HEADS"} == {
        k: v for k, v in expected.kwargs.items() if k != "HEADS"
    }
    assert [int(n) for n in call.grid] == list(expected.grid)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_and_compile_fullgraph(device):
    case = CASES[0]
    q, k, v, rpb = (x.to(device, torch.float32) for x in make_inputs(case, batch=1))
    ops = torch.ops.dinat_m2f_triton
    torch.library.opcheck(
        ops.na_fused.default, (q.requires_grad_(), k, v, rpb, [3, 3], [1, 1], 0.2)
    )
    torch.library.opcheck(ops.na_fused.default, (q, k, v, None, [3, 3], [2, 2], 0.2))

    def fn(q, k, v, rpb):
        return na2d(q, k, v, 3, dilation=2, rpb=rpb, backend="fused").square().sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    leaves = [x.detach().requires_grad_() for x in (q, k, v, rpb)]
    eager = [x.detach().requires_grad_() for x in (q, k, v, rpb)]
    compiled(*leaves).backward()
    fn(*eager).backward()
    for a, b in zip(leaves, eager):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


# --- choice of backend ------------------------------------------------------------------------


def _run(q, kernel, **kwargs):
    """na2d(q, q, q, kernel, **kwargs), the implementations that computed it, and the result
    against the brute-force oracle."""
    with record_implementations() as ran:
        out = na2d(q, q, q, kernel, **kwargs)
    expected = brute.na(*(q.double(),) * 3, (kernel, kernel), (1, 1))
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)
    return ran


NATIVE = "native" if "CPU" in native_backends() else "pure-pytorch"
UNFUSED = ["na:unfused", f"na_qk:{NATIVE}", f"na_av:{NATIVE}"]
# what "auto" runs for CPU tensors: the fused C++ kernels where the extension has them
CPU_AUTO = ["na:fused_cpu"] if "CPU" in FUSED_NA_DEVICES else UNFUSED


def test_each_backend_runs_what_it_names(monkeypatch):
    q = torch.randn(1, 9, 9, 2, 32)
    assert _run(q, 3, backend="reference") == ["na:reference"]
    assert _run(q, 3, backend="unfused") == UNFUSED
    # auto on CPU tensors: the C++ kernels, never Triton (not even under the interpreter)
    assert _run(q, 3, backend="auto") == CPU_AUTO
    monkeypatch.setenv(dispatch.BACKEND_ENV, "reference")
    assert _run(q, 3) == ["na:reference"]
    if fused.interpreting():
        assert _run(q, 3, backend="fused") == ["na:fused"]


# what the fused kernels cannot compute, and how they say it
REFUSED = [
    (torch.randn(1, 9, 9, 2, 32, dtype=torch.float64), 3, r"dtype torch.float64"),
    (torch.randn(1, 9, 9, 2, 8), 3, r"query head dim 8 \(the fused kernels take 16..128\)"),
    (torch.randn(1, 45, 45, 1, 16), 15, r"kernel_size \(15, 15\)"),
]


@pytest.mark.parametrize("tensor,kernel,message", REFUSED)
@pytest.mark.parametrize("device", DEVICES)
def test_auto_takes_the_fused_kernels_when_they_can_and_falls_back_when_not(
    monkeypatch, device, tensor, kernel, message
):
    """Backend "auto" on a device it gives to the fused kernels (CUDA; here also the CPU,
    under the interpreter): a call the fused kernels can compute runs them, one they cannot
    runs the CUDA tensors' unfused kernels or the CPU tensors' fused C++ kernels, and
    "fused" refuses it naming the reason."""
    if device == "cpu":
        monkeypatch.setattr(dispatch, "AUTO_FUSED_DEVICES", ("cuda", "cpu"))
    fits = torch.randn(1, 9, 9, 2, 32, device=device)
    assert _run(fits, 3, backend="auto") == ["na:fused"]
    tensor = tensor.to(device)
    if device == "cpu":
        fallback = CPU_AUTO
    else:
        native = "native" if device.upper() in native_backends() else "pure-pytorch"
        fallback = ["na:unfused", f"na_qk:{native}", f"na_av:{native}"]
    assert _run(tensor, kernel, backend="auto") == fallback
    with pytest.raises(
        ValueError, match=r"na2d: backend='fused' cannot compute this call: " + message
    ):
        na2d(tensor, tensor, tensor, kernel, backend="fused")


def test_bad_backend_names_the_argument_and_the_environment_variable(monkeypatch):
    q = torch.randn(1, 9, 9, 2, 32)
    with pytest.raises(
        ValueError,
        match=r"na2d: backend='triton' is not one of \['auto', 'fused', 'unfused', 'reference'\]",
    ):
        na2d(q, q, q, 3, backend="triton")
    monkeypatch.setenv(dispatch.BACKEND_ENV, "fast")
    with pytest.raises(ValueError, match=r"na1d: DINAT_M2F_NA_BACKEND='fast' is not one of"):
        na1d(q[:, 0], q[:, 0], q[:, 0], 3)


def test_fused_on_cpu_needs_the_interpreter():
    code = (
        "import torch; from dinat_m2f.layers import na2d; q = torch.randn(1, 9, 9, 2, 32)\n"
        "try:\n    na2d(q, q, q, 3, backend='fused')\n"
        "except ValueError as e:\n    print('ERROR', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert (
        "ERROR na2d: backend='fused' cannot compute this call: CPU tensors need Triton's "
        "interpreter (TRITON_INTERPRET=1)" in result.stdout
    ), result.stderr


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("offsets", [(0, 0), (1, 3), (3, 2)])
def test_key_tiles_may_start_before_the_axis(monkeypatch, offsets, device):
    """dK and dV are right whichever offset the planner gives the dK/dV kernel's key tiles
    (the planner picks (1, 1) for a 14x14 map with kernel 11, (0, 0) for most shapes)."""
    case = ((14, 13), (11, 5), (1, 2), 1, 16, 16, True)
    h, w = fused_plan.Axis(14, 11, 1), fused_plan.Axis(13, 5, 2)
    plan = dataclasses.replace(
        fused_plan.plan_tiles(h, w), kth=4, ktw=4, offset_h=offsets[0], offset_w=offsets[1]
    )
    monkeypatch.setattr(fused_plan, "plan_tiles", lambda *a: plan)
    tensors = make_inputs(case, batch=1)

    def fused_fn(q, k, v, rpb):
        return na2d(q, k, v, (11, 5), dilation=(1, 2), rpb=rpb, backend="fused")

    def oracle(q, k, v, rpb):
        return brute.na(q, k, v, (11, 5), (1, 2), rpb, scale=q.shape[-1] ** -0.5)

    got = outputs_and_grads(fused_fn, tensors, device, torch.float32)
    expected = outputs_and_grads(oracle, tensors, "cpu", torch.float64)
    assert_close_relative(got, expected, TOLERANCE[torch.float32])


@pytest.mark.parametrize("device", DEVICES)
def test_plan_tiles_are_the_ones_the_kernels_launch(monkeypatch, device):
    """The efficiency numbers come from the planner the launcher uses: a planted change of
    the plan changes what the kernels compute (still correctly)."""
    h, w = fused_plan.Axis(15, 7, 2), fused_plan.Axis(14, 7, 2)
    plan = fused_plan.plan_tiles(h, w)
    assert plan.block_q in (16, 32, 64) and plan.block_k in (16, 32, 64)
    seen = []
    real = fused_plan.plan_tiles
    monkeypatch.setattr(fused_plan, "plan_tiles", lambda *a: seen.append(a) or real(*a))
    q = torch.randn(1, 15, 14, 1, 32, device=device)
    na2d(q, q, q, 7, dilation=2, backend="fused")
    assert seen == [(h, w)]
