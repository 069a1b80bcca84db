"""The fused CPU NA kernels (dinat_m2f::na_fused and its backward, native/na/na_cpu_fused.cpp,
na_cpu_tiles.h and na_cpu_dense.h; what `na2d` / `na1d` run on CPU tensors by default) against the
brute-force oracle: output, log2-sum-exp and every gradient on the cases their code splits on.

The kernels take queries sixteen (AVX-512), eight (float) or four (double) to a vector along a
row, up to four rows at a time (AVX-512; two elsewhere), windows starting at consecutive
columns (plain loads) or not (borders, small groups: permuted loads), neighbours in chunks of
at most 8 / 6 / 5, the head dim in vectors of 16 / 8 / 4 with zero padding, rows in blocks of
32 (forward) and 64 (backward, recomputing the scores of the rows just outside a block),
dilation groups of unequal lengths, outputs over 1 MiB written with non-temporal stores, and
an AVX-512, AVX2 or baseline build of the same source. Where every window is its whole
dilation group, both passes run each group as one small dense attention instead (keys to a
vector, padded and masked; na_cpu_dense.h). Tolerances (max abs error relative to
max(1, max |ref|), inputs rounded to the dtype first): float64 1e-12, float32 2e-5, float16
1e-2, bfloat16 4e-2.
"""

import math

import pytest
import torch

import tests.na_brute_force as brute
from dinat_m2f.layers import na1d, na2d
from dinat_m2f.ops.library import FUSED_NA_DEVICES
from dinat_m2f.ops.na import dispatch
from tests.conftest import requires_emulated_device
from tests.emulated_device import use_emulated_device

pytestmark = pytest.mark.skipif(
    "CPU" not in FUSED_NA_DEVICES, reason="dinat_m2f._C without the fused CPU kernels"
)

TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 4e-2}

# (spatial, kernel, dilation, heads, dim, dim_v, rpb)
CASES = [
    ((9, 9), (3, 3), (1, 1), 2, 16, 16, True),  # one full tile and one lane; odd row count
    ((8, 16), (5, 5), (1, 1), 1, 8, 8, True),  # rows of whole tiles
    ((17, 23), (7, 7), (2, 3), 2, 32, 32, True),  # groups of unequal lengths (17 = 9 + 8)
    ((7, 7), (7, 7), (1, 1), 3, 32, 32, True),  # one window for the whole map: every tile broadcast
    ((13, 26), (13, 13), (1, 1), 1, 32, 32, True),  # kernel 13: chunks of 5, 4, 4 / 7, 6
    ((12, 23), (11, 5), (1, 2), 2, 20, 24, True),  # head dims not multiples of 8, dim_v != dim
    ((10, 30), (3, 9), (3, 2), 1, 5, 5, False),  # head dim 5, no RPB
    ((30, 31), (11, 11), (2, 2), 1, 33, 8, True),  # head dim 33: 4 + 1 vectors
    ((40,), (7,), (3,), 2, 32, 32, True),  # 1D
    ((21, 19), (9, 7), (2, 1), 1, 32, 16, True),  # a window 9 rows tall, dim_v one vector
]


def case_id(case):
    spatial, kernel, dilation, heads, dim, dim_v, rpb = case
    return (
        f"L{'x'.join(map(str, spatial))}-k{'x'.join(map(str, kernel))}-"
        f"d{'x'.join(map(str, dilation))}-h{heads}-D{dim}-Dv{dim_v}" + ("-rpb" if rpb else "")
    )


def make_inputs(case, batch=2, seed=0):
    spatial, kernel, _, heads, dim, dim_v, with_rpb = case
    g = torch.Generator().manual_seed(seed)
    shape = (batch, *spatial, heads)
    q, k = (torch.randn(*shape, dim, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(*shape, dim_v, generator=g, dtype=torch.float64)
    rpb = None
    if with_rpb:
        rpb = torch.randn(heads, *(2 * x - 1 for x in kernel), generator=g, dtype=torch.float64)
    return q, k, v, rpb


def outputs_and_grads(fn, tensors, dtype, grad_out=None):
    leaves = [None if x is None else x.detach().to(dtype).requires_grad_() for x in tensors]
    out = fn(*leaves)
    if grad_out is None:
        g = torch.Generator().manual_seed(1)
        grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    out.backward(grad_out.to(out.dtype))
    return [out.detach()] + [None if x is None else x.grad for x in leaves]


def assert_close_relative(got, expected, tol, names=("out", "dq", "dk", "dv", "drpb")):
    for name, a, b in zip(names, got, expected):
        if b is None:
            assert a is None
            continue
        err = (a.double() - b).abs().max().item() / max(1.0, b.abs().max().item())
        assert err <= tol, f"{name}: relative max error {err:.2e} > {tol:.0e}"


def oracle(case, inputs, grad_out=None):
    kernel, dilation, dim = case[1], case[2], case[4]
    return outputs_and_grads(
        lambda q, k, v, rpb: brute.na(q, k, v, kernel, dilation, rpb, scale=dim**-0.5),
        inputs,
        torch.float64,
        grad_out,
    )


def fused_cpu(case):
    """na1d / na2d on CPU tensors, which take the fused CPU kernels."""
    spatial, kernel, dilation = case[:3]
    na = na2d if len(spatial) == 2 else na1d
    return lambda q, k, v, rpb: na(q, k, v, kernel, dilation=dilation, rpb=rpb)


def test_auto_takes_the_fused_cpu_kernels():
    q = torch.randn(1, 9, 9, 2, 16)
    assert dispatch.resolve_backend("na2d", "auto", q, q, (3, 3)) == "fused_cpu"
    assert dispatch.resolve_backend("na2d", "unfused", q, q, (3, 3)) == "unfused"


@requires_emulated_device
def test_auto_does_not_take_them_on_the_emulated_device():
    q = torch.randn(1, 9, 9, 2, 16)
    with use_emulated_device():  # the CUDA kernels' tests must keep running them
        assert dispatch.resolve_backend("na2d", "auto", q, q, (3, 3)) == "unfused"


# Whole-window problems: every dilation group exactly a kernel long on both axes (CASES[3] too).
WHOLE_CASES = [
    ((14, 14), (7, 7), (2, 2), 2, 32, 32, False),  # DiNAT's layout at 224 px: 7 x 7 groups
    ((6, 15), (3, 5), (2, 3), 2, 20, 12, True),  # 15 keys: one vector and padding; dim_v != dim
    ((13, 13), (13, 13), (1, 1), 1, 33, 8, True),  # 169 keys in chunks of vectors; head dim 33
    ((21,), (7,), (3,), 2, 32, 32, True),  # 1D
]

PRECISION_CASES = [(c, d) for c in CASES for d in (torch.float64, torch.float32)] + [
    (c, d) for d in (torch.float16, torch.bfloat16) for c in (CASES[2], CASES[5], WHOLE_CASES[1])
]


@pytest.mark.parametrize(
    "case,dtype", PRECISION_CASES, ids=[f"{case_id(c)}-{str(d)[6:]}" for c, d in PRECISION_CASES]
)
def test_matches_brute_force(case, dtype):
    rounded = [None if x is None else x.to(dtype).double() for x in make_inputs(case)]
    got = outputs_and_grads(fused_cpu(case), rounded, dtype)
    for x in got:
        assert x is None or x.dtype == dtype
    assert_close_relative(got, oracle(case, rounded), TOLERANCE[dtype])


@pytest.mark.parametrize("case", [CASES[2], CASES[5], CASES[8]], ids=case_id)
def test_baseline_isa_matches_brute_force(case, monkeypatch):
    """The same source compiled without AVX2 (what a machine without it runs)."""
    monkeypatch.setenv("DINAT_M2F_CPU_ISA", "baseline")
    rounded = [None if x is None else x.float().double() for x in make_inputs(case)]
    got = outputs_and_grads(fused_cpu(case), rounded, torch.float32)
    assert_close_relative(got, oracle(case, rounded), TOLERANCE[torch.float32])


def test_an_unknown_isa_is_refused_by_name(monkeypatch):
    """A misspelt DINAT_M2F_CPU_ISA must not quietly run another build than the one asked for."""
    case = CASES[0]
    monkeypatch.setenv("DINAT_M2F_CPU_ISA", "avx-2")
    refused = "DINAT_M2F_CPU_ISA must be baseline, avx2 or avx512.*'avx-2'"
    with pytest.raises(RuntimeError, match=refused):
        outputs_and_grads(fused_cpu(case), make_inputs(case), torch.float32)
    monkeypatch.setenv("DINAT_M2F_CPU_ISA", "avx2")  # the default, by name
    rounded = [None if x is None else x.float().double() for x in make_inputs(case)]
    got = outputs_and_grads(fused_cpu(case), rounded, torch.float32)
    assert_close_relative(got, oracle(case, rounded), TOLERANCE[torch.float32])


# Maps tall enough to be split into row blocks (forward 32, backward 64 rows per group), so
# that a block's backward needs the query rows above and below it.
BLOCK_CASES = [
    ((140, 9), (5, 5), (1, 1), 1, 16, 16, True),  # 4 forward blocks, 2 backward blocks
    ((261, 8), (3, 7), (2, 1), 1, 8, 8, True),  # groups of 131 and 130 rows, 2 blocks each
    ((130, 9), (13, 3), (1, 3), 1, 8, 8, True),  # kernel 13 across the block edges
]


@pytest.mark.parametrize("case", BLOCK_CASES, ids=case_id)
def test_row_blocks_match_brute_force(case):
    inputs = make_inputs(case, batch=1)
    got = outputs_and_grads(fused_cpu(case), inputs, torch.float64)
    assert_close_relative(got, oracle(case, inputs), TOLERANCE[torch.float64])


HAS_AVX512 = torch.backends.cpu.get_cpu_capability() == "AVX512"


@pytest.mark.skipif(not HAS_AVX512, reason="this CPU has no AVX-512")
@pytest.mark.parametrize("case", CASES + BLOCK_CASES, ids=case_id)
def test_avx512_isa_matches_brute_force(case, monkeypatch):
    """The 16-query tiles of the AVX-512 build on every case, short rows included (by default
    they take only rows longer than 8 queries, and only on Intel cores)."""
    monkeypatch.setenv("DINAT_M2F_CPU_ISA", "avx512")
    rounded = [None if x is None else x.float().double() for x in make_inputs(case, batch=1)]
    got = outputs_and_grads(fused_cpu(case), rounded, torch.float32)
    assert_close_relative(got, oracle(case, rounded), TOLERANCE[torch.float32])


# Outputs larger than 1 MiB are written with non-temporal stores (kStreamBytes in
# na_cpu_fused.cpp): out and grad_query in place by the row kernels' vector stores, grad_key
# and grad_value by the flushes of their row buffers. float32, batch 1: 1.1-1.2 MB each.
STREAM_CASES = [
    ((48, 48), (7, 7), (1, 1), 4, 32, 32, True),
    ((44, 48), (5, 7), (2, 3), 4, 32, 32, False),  # dilated: a row's tokens pages apart
]


@pytest.mark.parametrize("isa", ["", "avx512", "avx2", "baseline"])
@pytest.mark.parametrize("case", STREAM_CASES, ids=case_id)
def test_streamed_outputs_match_brute_force(case, isa, monkeypatch):
    monkeypatch.setenv("DINAT_M2F_CPU_ISA", isa)
    rounded = [None if x is None else x.float().double() for x in make_inputs(case, batch=1)]
    assert rounded[0].numel() * 4 > 2**20  # float32 tensors over kStreamBytes
    got = outputs_and_grads(fused_cpu(case), rounded, torch.float32)
    assert_close_relative(got, oracle(case, rounded), TOLERANCE[torch.float32])


# Outputs of at least 32 MiB (kHugePageBytes in na_cpu_fused.cpp) ask for transparent huge
# pages before their first write. float32, batch 1: 33.6 MB each.
HUGE_CASE = ((512, 512), (3, 3), (1, 1), 1, 32, 32, True)


def transparent_huge_pages():
    """The kernel's THP mode ("always", "madvise" or "never"), or None off Linux."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


def asks_for_huge_pages(address):
    """Whether the mapping of this process that holds `address` was madvised MADV_HUGEPAGE
    (flag "hg" in /proc/self/smaps). Whether the pages then are huge depends on the heap: a
    region glibc reuses keeps the pages it already has."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and head == "VmFlags:":
                return "hg" in line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def test_huge_outputs_match_the_unfused_ops():
    q, k, v, rpb = (x.float() for x in make_inputs(HUGE_CASE, batch=1))
    assert q.numel() * 4 >= 32 * 2**20
    got = outputs_and_grads(fused_cpu(HUGE_CASE), (q, k, v, rpb), torch.float32)
    with dispatch.backend_env("unfused"):
        expected = outputs_and_grads(fused_cpu(HUGE_CASE), (q, k, v, rpb), torch.float32)
    assert_close_relative(got, [x.double() for x in expected], TOLERANCE[torch.float32])


@pytest.mark.skipif(
    transparent_huge_pages() in (None, "never"), reason="no transparent huge pages here"
)
@pytest.mark.parametrize("op", ["forward", "backward"])
def test_huge_outputs_ask_for_huge_pages(op):
    q, k, v, rpb = (x.float() for x in make_inputs(HUGE_CASE, batch=1))
    kernel, dilation, scale = [3, 3], [1, 1], 32**-0.5
    out, lse = torch.ops.dinat_m2f.na_fused(q, k, v, rpb, kernel, dilation, scale)
    outputs = [out]
    if op == "backward":
        outputs = torch.ops.dinat_m2f.na_fused_backward(
            torch.ones_like(out), q, k, v, rpb, out, lse, kernel, dilation, scale
        )[:3]
    for x in outputs:
        assert x.nbytes >= 32 * 2**20
        # the middle: the hint covers the whole 2 MiB pages inside the tensor
        assert asks_for_huge_pages(x.data_ptr() + x.nbytes // 2)


@pytest.mark.parametrize("isa", ["", "avx512", "avx2", "baseline"])
@pytest.mark.parametrize("case", WHOLE_CASES, ids=case_id)
def test_whole_window_groups_match_brute_force(case, isa, monkeypatch):
    """The dense kernels of whole-window groups on every build (a build the CPU lacks falls
    back to the best it has)."""
    monkeypatch.setenv("DINAT_M2F_CPU_ISA", isa)
    rounded = [None if x is None else x.float().double() for x in make_inputs(case)]
    got = outputs_and_grads(fused_cpu(case), rounded, torch.float32)
    assert_close_relative(got, oracle(case, rounded), TOLERANCE[torch.float32])


@pytest.mark.parametrize("isa", ["", "avx512", "avx2", "baseline"])
def test_whole_window_padding_never_wins_the_max(isa, monkeypatch):
    """The padding lanes of a score row read past the query's own biases, into values that
    other queries use; masked to -inf they cannot set the softmax's maximum. A bias of 200 on
    the last bias row (key row +3 below the query, where only the top query row sees it)
    lands in the padding of the second query row: taken as its maximum, every probability
    there would underflow to the same floor and the output would be a plain mean."""
    monkeypatch.setenv("DINAT_M2F_CPU_ISA", isa)
    case = ((7, 7), (7, 7), (1, 1), 1, 16, 16, True)
    q, k, v, rpb = make_inputs(case)
    rpb[:, -1, :] = 200.0
    rounded = [x.float().double() for x in (q, k, v, rpb)]
    got = outputs_and_grads(fused_cpu(case), rounded, torch.float32)
    assert_close_relative(got, oracle(case, rounded), TOLERANCE[torch.float32])


@pytest.mark.parametrize("isa", ["", "avx512", "avx2", "baseline"])
@pytest.mark.parametrize("spread", [0.2, 2.0])
@pytest.mark.parametrize(
    "case",
    [((20, 23), (7, 5), (2, 3), 2, 32, 32, True), ((14, 10), (7, 5), (2, 2), 2, 32, 32, True)],
    ids=["rows", "whole-windows"],
)
def test_lse_is_the_log2_sum_exp_of_the_logits(case, isa, spread, monkeypatch):
    """The forward's second output, which the backward trusts: log2 of the softmax sum, from
    the kernels' own vector log2 (float), by the row kernels and the whole-window ones. Small
    logits spread the sums over [1, K] (the polynomial's whole range), large ones leave one
    logit to dominate."""
    monkeypatch.setenv("DINAT_M2F_CPU_ISA", isa)
    _, kernel, dilation = case[:3]
    q, k, v, rpb = (x * spread for x in make_inputs(case, batch=1))
    q, k, v, rpb = (x.float() for x in (q, k, v, rpb))
    _, lse = torch.ops.dinat_m2f.na_fused(q, k, v, rpb, list(kernel), list(dilation), 32**-0.5)
    logits = brute.qk(q.double() * 32**-0.5, k.double(), kernel, dilation, rpb.double())
    expected = torch.logsumexp(logits, -1) / math.log(2)
    spans = expected - logits.amax(-1) / math.log(2)  # log2 of the sums
    assert spans.max() > 3 or spread > 1
    err = ((lse.double() - expected).abs() / expected.abs().clamp(min=1)).max().item()
    assert err <= 2e-6, f"lse: relative max error {err:.2e}"


@pytest.mark.parametrize("case", [BLOCK_CASES[0], WHOLE_CASES[1]], ids=case_id)
def test_results_do_not_depend_on_the_thread_count(case):
    inputs = make_inputs(case, batch=1)
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 3):
            torch.set_num_threads(threads)
            results.append(outputs_and_grads(fused_cpu(case), inputs, torch.float32))
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_non_contiguous_inputs_and_broadcast_grad_out():
    case = ((11, 12), (5, 5), (2, 1), 3, 16, 16, True)
    g = torch.Generator().manual_seed(4)
    # q, k, v as the attention module makes them: views into one (B, H, W, 3, heads, D) tensor
    qkv = torch.randn(2, 11, 12, 3, 3, 16, generator=g, dtype=torch.float64)
    # and a head dim with stride != 1
    q_t = torch.randn(2, 11, 12, 16, 3, generator=g, dtype=torch.float64).transpose(-1, -2)
    rpb = torch.randn(3, 9, 9, generator=g, dtype=torch.float64)
    for q, k, v in [qkv.unbind(3), (q_t, qkv[..., 1, :, :], qkv[..., 2, :, :])]:
        assert not q.is_contiguous()
        ones = torch.ones(1, dtype=torch.float64).expand(2, 11, 12, 3, 16)  # stride 0
        for dtype in (torch.float64, torch.float32):
            got = outputs_and_grads(fused_cpu(case), [q, k, v, rpb], dtype, grad_out=ones)
            expected = oracle(case, [q, k, v, rpb], grad_out=ones)
            assert_close_relative(got, expected, TOLERANCE[dtype])


def test_backward_reads_grad_out_and_out_by_their_strides():
    """The backward op called directly (autograd hands it both contiguous): a broadcast grad_out
    and an out whose head dim is strided give what float64 gives; head dim 12 is a vector and a
    tail of the softmax correction's row dots."""
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 9, 10, 2, 12, generator=g, dtype=torch.float64) for _ in range(3))
    grad = torch.randn(1, 1, 1, 2, 12, generator=g, dtype=torch.float64)
    window = ([3, 3], [2, 1], 0.3)

    def gradients(dtype, strided):
        x = [t.to(dtype) for t in (q, k, v)]
        out, lse = torch.ops.dinat_m2f.na_fused(*x, None, *window)
        grad_out = grad.to(dtype).expand(out.shape)  # stride 0
        if strided:
            out = out.transpose(-1, -2).contiguous().transpose(-1, -2)  # head-dim stride 2
            assert out.stride(-1) == 2
        else:
            grad_out = grad_out.contiguous()
        return torch.ops.dinat_m2f.na_fused_backward(grad_out, *x, None, out, lse, *window)[:3]

    expected = gradients(torch.float64, strided=False)
    for strided in (False, True):
        for got, want in zip(gradients(torch.float32, strided), expected):
            torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_gradcheck():
    case = ((9, 11), (3, 5), (2, 2), 2, 8, 4, True)
    q, k, v, rpb = (x.requires_grad_() for x in make_inputs(case, batch=1))
    assert torch.autograd.gradcheck(
        lambda q, k, v, rpb: na2d(q, k, v, (3, 5), dilation=2, rpb=rpb), (q, k, v, rpb)
    )


def test_opcheck():
    q, k, v, rpb = (x.float() for x in make_inputs(CASES[2], batch=1))
    op = torch.ops.dinat_m2f.na_fused.default
    torch.library.opcheck(op, (q.requires_grad_(), k, v, rpb, [7, 7], [2, 3], 0.2))
    torch.library.opcheck(op, (q, k, v, None, [7, 7], [2, 3], 0.2))


def test_nan_reaches_exactly_the_queries_whose_window_holds_it():
    case = ((12, 12), (5, 5), (2, 2), 1, 8, 8, True)
    q, k, v, rpb = make_inputs(case, batch=1)
    k[0, 4, 6, 0, 3] = float("nan")
    got = na2d(q, k, v, 5, dilation=2, rpb=rpb)
    expected = na2d(q, k, v, 5, dilation=2, rpb=rpb, backend="unfused")
    assert torch.equal(got.isnan(), expected.isnan()) and got.isnan().any()


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda q, lse: (q, q, q[:, :5], None), r"value must have query's shape"),
        (lambda q, lse: (q, q, q.double(), None), r"value must match query's device and dtype"),
        (lambda q, lse: (q, q, q, torch.zeros(2, 3, 3)), r"rpb must have shape"),
    ],
)
def test_forward_refuses_bad_input(call, message):
    q = torch.randn(1, 9, 9, 2, 8)
    with pytest.raises(ValueError, match=message):
        torch.ops.dinat_m2f.na_fused(*call(q, None), [3, 3], [1, 1], 0.5)
    with pytest.raises(ValueError, match=r"scale must be finite, got inf"):
        torch.ops.dinat_m2f.na_fused(q, q, q, None, [3, 3], [1, 1], float("inf"))


def test_backward_refuses_a_foreign_lse():
    q = torch.randn(1, 9, 9, 2, 8)
    out, lse = torch.ops.dinat_m2f.na_fused(q, q, q, None, [3, 3], [1, 1], 0.5)
    backward = torch.ops.dinat_m2f.na_fused_backward
    with pytest.raises(ValueError, match=r"lse must be na_fused's \(shape \[1, 9, 9, 2\], dtype"):
        backward(out, q, q, q, None, out, lse.double(), [3, 3], [1, 1], 0.5)
    with pytest.raises(ValueError, match=r"grad_out .* and value .* must have the same shape"):
        backward(out[..., :4], q, q, q, None, out, lse, [3, 3], [1, 1], 0.5)
