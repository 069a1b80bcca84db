"""CUDA kernels vs the CPU kernels in float64, per dtype, forward and backward, for the tiled
shapes (2D, kernel 3..13, head dim 32/64) and the naive ones. Skipped without a GPU.

Tolerances (max abs error relative to max(1, max |reference|)): float32 1e-4,
float16 1e-2, bfloat16 4e-2.
"""

import pytest
import torch

from dinat_m2f.layers import na1d, na2d, na2d_av, na2d_qk

pytestmark = pytest.mark.cuda

TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}
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


def run(fn, inputs, grad_out_seed=0):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    g = torch.Generator(device="cpu").manual_seed(grad_out_seed)
    grad = torch.randn(out.shape, generator=g).to(out)
    out.backward(grad)
    return [out.detach()] + [x.grad for x in leaves]


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cuda_matches_cpu(shape, dtype):
    spatial, kernel, dilation, heads, dim = shape
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, *spatial, heads, dim, generator=g, dtype=torch.float64) for _ in range(3))
    rpb = torch.randn(heads, *(2 * kernel - 1,) * len(spatial), generator=g, dtype=torch.float64)
    na = na2d if len(spatial) == 2 else na1d

    def fn(q, k, v, rpb):
        return na(q, k, v, kernel, dilation=dilation, rpb=rpb)

    expected = run(fn, [q, k, v, rpb])
    got = run(fn, [x.to("cuda", dtype) for x in (q, k, v, rpb)])
    for name, a, b in zip(["out", "dq", "dk", "dv", "drpb"], got, expected):
        assert a.dtype == dtype and a.is_cuda
        err = (a.double().cpu() - b).abs().max().item() / max(1.0, b.abs().max().item())
        assert err <= TOLERANCE[dtype], f"{name}: relative max error {err:.2e}"


@pytest.mark.parametrize("kernel", [3, 5, 7, 9, 11, 13])
@pytest.mark.parametrize("dim", [32, 64])
def test_cuda_unfused_ops_float32(kernel, dim):
    g = torch.Generator().manual_seed(kernel)
    q, k, v = (torch.randn(1, 3 * kernel, 3 * kernel + 2, 2, dim, generator=g) for _ in range(3))
    rpb = torch.randn(2, 2 * kernel - 1, 2 * kernel - 1, generator=g)
    logits = na2d_qk(q, k, kernel, dilation=2, rpb=rpb)
    cuda = [x.cuda() for x in (q, k, v, rpb)]
    torch.testing.assert_close(na2d_qk(cuda[0], cuda[1], kernel, dilation=2, rpb=cuda[3]).cpu(), logits,
                               rtol=1e-4, atol=1e-4)
    attn = logits.softmax(-1)
    torch.testing.assert_close(na2d_av(attn.cuda(), cuda[2], kernel, dilation=2).cpu(),
                               na2d_av(attn, v, kernel, dilation=2), rtol=1e-4, atol=1e-4)


def test_cuda_empty_batch_and_non_contiguous():
    q = torch.randn(0, 9, 9, 2, 32, device="cuda")
    assert na2d(q, q, q, 3).shape == q.shape
    x = torch.randn(2, 2, 16, 17, 32, device="cuda").permute(0, 2, 3, 1, 4)
    torch.testing.assert_close(na2d(x, x, x, 5, dilation=3).cpu(), na2d(x.cpu(), x.cpu(), x.cpu(), 5, dilation=3),
                               rtol=1e-4, atol=1e-4)
