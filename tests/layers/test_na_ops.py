"""Every NA op and its gradients: native kernels vs the pure-PyTorch path vs a brute-force
oracle, over kernel sizes 3/5/7/11, dilations 1..4, non-square and non-multiple sizes,
1..4 heads, head dims 8..64, with and without RPB (float64, so differences are exact-ish)."""

import pytest
import torch

from dinat_m2f.layers import na1d, na1d_av, na1d_qk, na2d, na2d_av, na2d_qk
from dinat_m2f.ops.na.reference import na_av_reference, na_qk_reference
from tests import na_brute_force as brute
from tests.conftest import requires_native

# (spatial, kernel, dilation, heads, dim, rpb)
CASES_2D = [
    ((9, 11), (3, 3), (1, 1), 1, 8, True),
    ((13, 10), (3, 3), (3, 3), 2, 16, False),
    ((10, 9), (3, 3), (2, 3), 2, 24, True),
    ((11, 14), (5, 5), (2, 2), 3, 8, True),
    ((21, 23), (5, 5), (4, 4), 2, 32, True),
    ((7, 9), (7, 7), (1, 1), 1, 64, True),
    ((15, 16), (7, 7), (2, 2), 4, 16, True),
    ((22, 25), (7, 7), (3, 3), 2, 8, False),
    ((29, 30), (7, 7), (4, 4), 1, 8, True),
    ((11, 12), (11, 11), (1, 1), 2, 32, True),
    ((23, 13), (11, 5), (2, 2), 1, 8, True),
    ((45, 13), (11, 11), (4, 1), 1, 16, True),
    ((12, 25), (9, 7), (1, 3), 2, 12, True),
]
CASES_1D = [
    ((13,), (3,), (1,), 1, 8, True),
    ((23,), (5,), (4,), 2, 16, False),
    ((16,), (7,), (2,), 4, 64, True),
    ((30,), (9,), (3,), 2, 12, True),
    ((47,), (11,), (4,), 3, 32, True),
    ((11,), (11,), (1,), 1, 8, True),
]
CASES = CASES_2D + CASES_1D
FUNCS = {1: (na1d_qk, na1d_av, na1d), 2: (na2d_qk, na2d_av, na2d)}


def case_id(case):
    spatial, kernel, dilation, heads, dim, rpb = case
    return f"L{spatial}-k{kernel}-d{dilation}-h{heads}-D{dim}-{'rpb' if rpb else 'norpb'}"


def make_inputs(case, batch=2, seed=0):
    spatial, kernel, dilation, heads, dim, with_rpb = case
    g = torch.Generator().manual_seed(seed)
    shape = (batch, *spatial, heads, dim)
    q, k, v = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    rpb = (
        torch.randn(heads, *(2 * x - 1 for x in kernel), generator=g, dtype=torch.float64)
        if with_rpb
        else None
    )
    return q, k, v, rpb


def grads(fn, inputs, seed=1):
    """Output and gradients of `fn` w.r.t. every tensor input, for a random output grad."""
    leaves = [x.clone().requires_grad_() if x is not None else None for x in inputs]
    out = fn(*leaves)
    grad_out = torch.randn(
        out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    grad_out = grad_out.to(out.dtype)
    out.backward(grad_out)
    return [out.detach()] + [x.grad for x in leaves if x is not None]


def assert_all_close(got, expected, atol=1e-10, rtol=1e-9):
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m, i=i: f"item {i}: {m}")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_qk_matches_brute_force_and_reference(case):
    _, kernel, dilation, _, _, with_rpb = case
    qk = FUNCS[len(kernel)][0]
    q, k, _, rpb = make_inputs(case)
    inputs = [q, k] + ([rpb] if with_rpb else [])

    def ours(q, k, rpb=None):
        return qk(q, k, kernel, dilation=dilation, rpb=rpb)

    def oracle(q, k, rpb=None):
        return brute.qk(q, k, kernel, dilation, rpb)

    def reference(q, k, rpb=None):
        return na_qk_reference(q, k, rpb, kernel, dilation)

    expected = grads(oracle, inputs)
    assert_all_close(grads(ours, inputs), expected)
    assert_all_close(grads(reference, inputs), expected)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_av_matches_brute_force_and_reference(case):
    _, kernel, dilation, _, _, _ = case
    av = FUNCS[len(kernel)][1]
    q, k, v, _ = make_inputs(case)
    attn = brute.qk(q, k, kernel, dilation).softmax(-1)

    expected = grads(lambda a, v: brute.av(a, v, kernel, dilation), [attn, v])
    assert_all_close(grads(lambda a, v: av(a, v, kernel, dilation=dilation), [attn, v]), expected)
    assert_all_close(
        grads(lambda a, v: na_av_reference(a, v, kernel, dilation), [attn, v]), expected
    )


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_na_matches_brute_force(case):
    _, kernel, dilation, _, _, with_rpb = case
    na = FUNCS[len(kernel)][2]
    q, k, v, rpb = make_inputs(case)
    inputs = [q, k, v] + ([rpb] if with_rpb else [])
    expected = grads(lambda q, k, v, rpb=None: brute.na(q, k, v, kernel, dilation, rpb), inputs)
    assert_all_close(
        grads(lambda q, k, v, rpb=None: na(q, k, v, kernel, dilation=dilation, rpb=rpb), inputs),
        expected,
    )


def test_int_and_tuple_arguments_agree():
    q, k, v, rpb = make_inputs(((14, 15), (5, 5), (2, 2), 2, 8, True))
    torch.testing.assert_close(
        na2d(q, k, v, 5, dilation=2, rpb=rpb), na2d(q, k, v, (5, 5), dilation=(2, 2), rpb=rpb)
    )


def test_value_head_dim_may_differ():
    q, k, _, rpb = make_inputs(((9, 9), (3, 3), (1, 1), 2, 8, True))
    v = torch.randn(2, 9, 9, 2, 12, dtype=torch.float64)
    out = na2d(q, k, v, 3, dilation=1, rpb=rpb)
    assert out.shape == (2, 9, 9, 2, 12)
    torch.testing.assert_close(out, brute.na(q, k, v, (3, 3), (1, 1), rpb))


def test_explicit_scale():
    q, k, v, rpb = make_inputs(((8, 9), (3, 3), (2, 2), 2, 8, True))
    torch.testing.assert_close(
        na2d(q, k, v, 3, dilation=2, rpb=rpb, scale=0.3),
        brute.na(q, k, v, (3, 3), (2, 2), rpb, scale=0.3),
    )


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(3)
    # (B, heads, H, W, D) permuted to heads-last: non-contiguous views
    q, k, v = (
        torch.randn(2, 3, 10, 11, 16, generator=g, dtype=torch.float64).permute(0, 2, 3, 1, 4)
        for _ in range(3)
    )
    rpb = torch.randn(3, 9, 9, generator=g, dtype=torch.float64).transpose(1, 2)
    assert not q.is_contiguous() and not rpb.is_contiguous()
    expected = brute.na(q, k, v, (5, 5), (2, 2), rpb)
    torch.testing.assert_close(na2d(q, k, v, 5, dilation=2, rpb=rpb), expected)
    torch.testing.assert_close(
        na2d(q.contiguous(), k, v, 5, dilation=2, rpb=rpb.contiguous()), expected
    )


@pytest.mark.parametrize("rank", [1, 2])
def test_empty_batch(rank):
    spatial = (9,) * rank
    q = torch.randn(0, *spatial, 2, 8, requires_grad=True)
    k = torch.randn(0, *spatial, 2, 8, requires_grad=True)
    v = torch.randn(0, *spatial, 2, 8, requires_grad=True)
    rpb = torch.randn(2, *(5,) * rank, requires_grad=True)
    out = FUNCS[rank][2](q, k, v, 3, dilation=1, rpb=rpb)
    assert out.shape == q.shape
    out.sum().backward()
    assert q.grad.shape == q.shape and v.grad.shape == v.shape
    assert torch.equal(rpb.grad, torch.zeros_like(rpb))


@requires_native
@pytest.mark.parametrize(
    "dtype,atol", [(torch.float32, 1e-5), (torch.float16, 5e-3), (torch.bfloat16, 3e-2)]
)
def test_cpu_low_precision_against_float64(dtype, atol):
    q, k, v, rpb = make_inputs(((14, 13), (5, 5), (2, 2), 2, 32, True))
    expected = grads(lambda *x: na2d(*x[:3], 5, dilation=2, rpb=x[3]), [q, k, v, rpb])
    got = grads(
        lambda *x: na2d(*x[:3], 5, dilation=2, rpb=x[3]), [t.to(dtype) for t in (q, k, v, rpb)]
    )
    for a, b in zip(got, expected):
        assert a.dtype == dtype
        scale = b.abs().max().item()
        assert (a.double() - b).abs().max().item() <= atol * max(1.0, scale)


@requires_native
def test_cpu_kernels_are_deterministic_across_thread_counts():
    q, k, v, rpb = make_inputs(((24, 25), (7, 7), (3, 3), 4, 32, True), batch=2)
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, max(2, previous)):
            torch.set_num_threads(threads)
            results.append(grads(lambda *x: na2d(*x[:3], 7, dilation=3, rpb=x[3]), [q, k, v, rpb]))
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(*results):
        assert torch.equal(a, b)
