"""float64 gradcheck of every op for all inputs, and NA with a full-size window equals
scaled_dot_product_attention."""

import pytest
import torch
import torch.nn.functional as F

from dinat_m2f.layers import na1d, na1d_av, na1d_qk, na2d, na2d_av, na2d_qk


def rand(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("with_rpb", [True, False])
def test_gradcheck_2d(with_rpb):
    q, k, v = (rand(1, 7, 6, 2, 4, seed=s) for s in range(3))
    rpb = rand(2, 5, 9, seed=3) if with_rpb else None
    kernel, dilation = (3, 5), (2, 1)
    assert torch.autograd.gradcheck(
        lambda q, k, rpb: na2d_qk(q, k, kernel, dilation=dilation, rpb=rpb), (q, k, rpb)
    )
    attn = rand(1, 7, 6, 2, 15, seed=4)
    assert torch.autograd.gradcheck(
        lambda a, v: na2d_av(a, v, kernel, dilation=dilation), (attn, v)
    )
    assert torch.autograd.gradcheck(
        lambda q, k, v, rpb: na2d(q, k, v, kernel, dilation=dilation, rpb=rpb), (q, k, v, rpb)
    )


def test_gradcheck_1d():
    q, k, v = (rand(2, 11, 2, 3, seed=s) for s in range(3))
    rpb = rand(2, 5, seed=3)
    assert torch.autograd.gradcheck(
        lambda q, k, rpb: na1d_qk(q, k, 3, dilation=3, rpb=rpb), (q, k, rpb)
    )
    attn = rand(2, 11, 2, 3, seed=4)
    assert torch.autograd.gradcheck(lambda a, v: na1d_av(a, v, 3, dilation=3), (attn, v))
    assert torch.autograd.gradcheck(
        lambda q, k, v, rpb: na1d(q, k, v, 3, dilation=3, rpb=rpb), (q, k, v, rpb)
    )


def sdpa_heads_last(q, k, v):
    """Plain self attention over all tokens, heads-last in and out."""
    batch, heads = q.shape[0], q.shape[-2]
    flat = [x.reshape(batch, -1, heads, x.shape[-1]).transpose(1, 2) for x in (q, k, v)]
    out = F.scaled_dot_product_attention(*flat)
    return out.transpose(1, 2).reshape(*q.shape[:-1], v.shape[-1])


@pytest.mark.parametrize("spatial", [(7, 7), (5, 9), (11,)])
def test_full_window_equals_sdpa(spatial):
    q, k, v = (rand(2, *spatial, 3, 16, seed=s) for s in range(3))
    na = na2d if len(spatial) == 2 else na1d
    out = na(q, k, v, kernel_size=spatial, dilation=1)
    expected = sdpa_heads_last(q, k, v)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(expected, (q, k, v), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
