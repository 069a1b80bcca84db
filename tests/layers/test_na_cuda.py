"""The CUDA NA kernels against the CPU kernels in float64, forward and backward, per backend and
dtype: the `.cu` kernels (NA backend "unfused") on a real GPU and on the emulated device
(tests/devices.py), which runs the same kernels and launch code on CPU threads in CI, and the
fused Triton kernels (NA backend "fused") on a real GPU (their interpreter runs, without a
GPU, are tests/layers/test_na_fused.py). Shapes: the tiled ones (2D, kernel 3..13, head dim
32/64) and the naive ones; the emulated device takes smaller ones.

Inputs are rounded to the tested dtype first, so the comparison measures the kernels' error,
not the inputs' rounding. Tolerances (max abs error relative to max(1, max |reference|)):
float32 1e-4, float16 1e-2, bfloat16 4e-2, float64 1e-10 (the `.cu` kernels only: the fused
ones take float16, bfloat16 and float32).
"""

from functools import partial

import pytest
import torch

from dinat_m2f.benchmarks import accuracy
from dinat_m2f.layers import na1d, na2d, na2d_av, na2d_qk
from dinat_m2f.ops.na import fused
from tests import devices

TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2, torch.float64: 1e-10}
SHAPES = [
    # (spatial, kernel, dilation, heads, dim): tiled
    ((14, 14), 3, 1, 2, 32),
    ((32, 35), 7, 2, 4, 32),
    ((28, 28), 7, 4, 2, 64),
    ((45, 40), 11, 3, 2, 32),
    ((40, 44), 13, 3, 1, 64),
    ((64, 64), 11, 1, 3, 32),
    # naive: other head dims, 1D
    ((20, 21), 5, 2, 3, 16),
    ((50,), 7, 3, 2, 32),
]
# and the accuracy table's (dinat_m2f.benchmarks.accuracy): tested here, its numbers are
# bounded, and on a GPU its fused kernels are compiled (and cached) by the time it runs
SHAPES += [s[1:] for s in accuracy.NA_SHAPES["cuda"] if s[1:] not in SHAPES]
# The emulated device's: small, the same paths (tiled 2D with partial tiles, several groups
# and chunks; naive head dims and 1D)
EMULATED_SHAPES = [
    ((9, 10), 3, 1, 2, 32),
    ((13, 11), 5, 2, 1, 64),
    ((15, 14), 7, 2, 1, 32),
    ((11, 12), 5, 2, 2, 16),
    ((23,), 5, 3, 2, 32),
]


def shape_id(shape):
    spatial, kernel, dilation, heads, dim = shape
    return f"L{'x'.join(map(str, spatial))}-k{kernel}-d{dilation}-h{heads}-D{dim}"


def run(fn, inputs, grad_out_seed=0):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    g = torch.Generator(device="cpu").manual_seed(grad_out_seed)
    grad = torch.randn(out.shape, generator=g).to(out)
    out.backward(grad)
    return [out.detach()] + [x.grad for x in leaves]


def kernel_cases() -> list:
    """(device backend, NA backend, shape, dtype): the `.cu` kernels on the GPU and on the
    emulated device in every dtype; the fused kernels on the GPU in theirs."""
    params = []
    for dtype in TOLERANCE:
        runs = [("cuda", "unfused", s) for s in SHAPES]
        runs += [("emulated", "unfused", s) for s in EMULATED_SHAPES]
        if dtype in fused.DTYPES:
            runs += [("cuda", "fused", s) for s in SHAPES]
        name = str(dtype).removeprefix("torch.")
        params += [
            devices.param(b, na_backend, s, dtype, id=f"{na_backend}-{shape_id(s)}-{name}")
            for b, na_backend, s in runs
        ]
    return params


@pytest.mark.parametrize("backend,na_backend,shape,dtype", kernel_cases())
def test_cuda_matches_cpu(backend, na_backend, shape, dtype):
    spatial, kernel, dilation, heads, dim = shape
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, *spatial, heads, dim, generator=g, dtype=torch.float64) for _ in range(3)
    )
    rpb = torch.randn(heads, *(2 * kernel - 1,) * len(spatial), generator=g, dtype=torch.float64)
    rounded = [x.to(dtype).double() for x in (q, k, v, rpb)]
    na = na2d if len(spatial) == 2 else na1d

    def fn(q, k, v, rpb, backend="unfused"):
        return na(q, k, v, kernel, dilation=dilation, rpb=rpb, backend=backend)

    expected = run(fn, rounded)  # the CPU kernels in float64
    device = devices.device(backend)
    with devices.on(backend):
        got = run(partial(fn, backend=na_backend), [x.to(device, dtype) for x in rounded])
    for name, a, b in zip(["out", "dq", "dk", "dv", "drpb"], got, expected):
        assert a.dtype == dtype and a.device.type == device.type
        err = (a.double().cpu() - b).abs().max().item() / max(1.0, b.abs().max().item())
        assert err <= TOLERANCE[dtype], f"{name}: relative max error {err:.2e}"


@pytest.mark.parametrize(
    "backend,case",
    devices.cases(
        [(k, d) for k in (3, 5, 7, 9, 11, 13) for d in (32, 64)],
        [(k, d) for k in (3, 5, 7, 9, 11, 13) for d in (32, 64)],
        lambda c: f"k{c[0]}-D{c[1]}",
    ),
)
def test_cuda_unfused_ops_float32(backend, case):
    kernel, dim = case
    g = torch.Generator().manual_seed(kernel)
    heads = 2 if backend == "cuda" else 1
    q, k, v = (
        torch.randn(1, 3 * kernel, 3 * kernel + 2, heads, dim, generator=g) for _ in range(3)
    )
    rpb = torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=g)
    logits = na2d_qk(q, k, kernel, dilation=2, rpb=rpb)
    attn = logits.softmax(-1)
    expected_out = na2d_av(attn, v, kernel, dilation=2)
    device = devices.device(backend)
    # these shapes take the tiled kernels: the planner's choice for every kernel size
    if backend == "emulated":
        for op in ("qk", "av"):
            tile, chunk, smem = torch.ops.dinat_m2f_testing.na_tile_plan(
                q, [kernel] * 2, [2, 2], op
            )
            assert tile >= 2 and chunk in (16, 32) and 0 < smem <= 48 * 1024
    with devices.on(backend):
        gpu = [x.to(device) for x in (q, k, v, rpb)]
        got_logits = na2d_qk(gpu[0], gpu[1], kernel, dilation=2, rpb=gpu[3])
        got_out = na2d_av(attn.to(device), gpu[2], kernel, dilation=2)
    torch.testing.assert_close(got_logits.cpu(), logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_out.cpu(), expected_out, rtol=1e-4, atol=1e-4)


# the backend "auto" takes: the fused kernels for CUDA tensors; the .cu kernels elsewhere
AUTO = {"cuda": "fused", "emulated": "unfused"}


@pytest.mark.parametrize(
    "backend,na_backend",
    [devices.param("cuda", b, id=b) for b in ("unfused", "fused", "auto")]
    + [devices.param("emulated", b, id=b) for b in ("unfused", "auto")],
)
def test_cuda_empty_batch_and_non_contiguous(backend, na_backend, monkeypatch):
    device = devices.device(backend)
    chosen = AUTO[backend] if na_backend == "auto" else na_backend
    x = torch.randn(2, 2, 16, 17, 32).permute(0, 2, 3, 1, 4)
    with devices.on(backend), devices.expect_na_backend(chosen, monkeypatch):
        q = torch.randn(0, 9, 9, 2, 32, device=device)
        assert na2d(q, q, q, 3, backend=na_backend).shape == q.shape
        got = na2d(*[x.to(device)] * 3, 5, dilation=3, backend=na_backend)
    assert not x.to(device).is_contiguous()
    torch.testing.assert_close(
        got.cpu(), na2d(x, x, x, 5, dilation=3, backend="unfused"), rtol=1e-4, atol=1e-4
    )
