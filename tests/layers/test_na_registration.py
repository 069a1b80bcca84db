"""The native ops are proper torch.library ops: opcheck (schema, fake kernels, autograd
registration, AOT dispatch) passes and torch.compile(fullgraph=True) traces na2d."""

import pytest
import torch

from dinat_m2f.layers import na1d, na2d
from dinat_m2f.ops.library import FUSED_NA_DEVICES
from tests.conftest import requires_native

pytestmark = requires_native


def rand(*shape, seed, grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).requires_grad_(grad)


@pytest.mark.parametrize("rank", [1, 2])
def test_opcheck_forward_ops(rank):
    spatial, kernel, dilation = ((9, 10), [3, 3], [2, 3]) if rank == 2 else ((13,), [5], [2])
    q, k, v = (rand(2, *spatial, 2, 8, seed=s) for s in range(3))
    rpb = rand(2, *(2 * x - 1 for x in kernel), seed=3)
    attn = rand(2, *spatial, 2, int(torch.tensor(kernel).prod()), seed=4)
    ops = torch.ops.dinat_m2f
    torch.library.opcheck(ops.na_qk.default, (q, k, rpb, kernel, dilation))
    torch.library.opcheck(ops.na_qk.default, (q, k, None, kernel, dilation))
    torch.library.opcheck(ops.na_av.default, (attn, v, kernel, dilation))


def test_opcheck_backward_ops():
    kernel, dilation = [3, 5], [2, 1]
    q, k, v = (rand(2, 8, 7, 2, 8, seed=s, grad=False) for s in range(3))
    attn = rand(2, 8, 7, 2, 15, seed=4, grad=False)
    ops = torch.ops.dinat_m2f
    torch.library.opcheck(ops.na_qk_backward.default, (attn, q, k, kernel, dilation))
    torch.library.opcheck(ops.na_av_backward.default, (q, attn, v, kernel, dilation))
    torch.library.opcheck(ops.na_rpb_backward.default, (attn, kernel, dilation))


def _loss(fn, *args):
    out = fn(*args)
    grads = torch.autograd.grad(out.square().sum(), args)
    return out, grads


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_na2d(backend):
    torch._dynamo.reset()

    def attention(q, k, v, rpb):
        return na2d(q, k, v, kernel_size=5, dilation=2, rpb=rpb) * 2.0 + 1.0

    compiled = torch.compile(attention, fullgraph=True, backend=backend)
    args = [rand(2, 12, 11, 2, 16, seed=s) for s in range(3)] + [rand(2, 9, 9, seed=3)]
    out, grads = _loss(compiled, *args)
    ref_out, ref_grads = _loss(attention, *args)
    torch.testing.assert_close(out, ref_out)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", ["unfused", "auto"])
def test_compile_records_native_ops_without_graph_breaks(backend):
    torch._dynamo.reset()
    args = [rand(1, 15, 2, 8, seed=s, grad=False) for s in range(3)]
    explanation = torch._dynamo.explain(
        lambda q, k, v: na1d(q, k, v, 3, dilation=4, backend=backend)
    )(*args)
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1
    graph_code = explanation.graphs[0].code
    if backend == "auto" and "CPU" in FUSED_NA_DEVICES:  # CPU tensors: the fused C++ op
        assert "dinat_m2f.na_fused" in graph_code and "na_qk" not in graph_code
    else:
        assert "dinat_m2f.na_qk" in graph_code and "dinat_m2f.na_av" in graph_code
