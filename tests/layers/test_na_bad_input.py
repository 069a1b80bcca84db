"""Bad input is a ValueError naming the argument and the values, from the public functions
and from the raw native ops alike; nothing crashes or reads out of bounds."""

import pytest
import torch

from dinat_m2f.layers import na1d, na2d, na2d_av, na2d_qk
from tests.conftest import requires_native


def t(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


Q = t(1, 9, 10, 2, 8)
RPB = t(2, 5, 5)
ATTN = t(1, 9, 10, 2, 9)

BAD_NA2D = [
    ("even kernel", dict(kernel_size=4), r"na2d: kernel_size must be odd and >= 3 .*got 4$"),
    ("kernel 1", dict(kernel_size=1), r"kernel_size must be odd and >= 3 .*got 1$"),
    ("kernel tuple", dict(kernel_size=(3, 2)), r"kernel_size must be odd and >= 3 .*got \(3, 2\)$"),
    (
        "kernel rank",
        dict(kernel_size=(3, 3, 3)),
        r"kernel_size must be an int or a tuple of 2 ints",
    ),
    ("dilation 0", dict(dilation=0), r"dilation must be >= 1, got 0"),
    ("dilation neg", dict(dilation=(1, -2)), r"dilation must be >= 1, got \(1, -2\)"),
    (
        "too small",
        dict(kernel_size=5, dilation=2),
        r"query has spatial size \(9, 10\) but kernel_size \(5, 5\) with dilation \(2, 2\) "
        r"needs at least \(10, 10\) \(axis 0: 9 < 5\*2\)",
    ),
    ("rpb shape", dict(rpb=t(2, 3, 3)), r"rpb must have shape .* = \(2, 5, 5\), got \(2, 3, 3\)"),
    ("rpb heads", dict(rpb=t(3, 5, 5)), r"= \(2, 5, 5\), got \(3, 5, 5\)"),
    (
        "rpb dtype",
        dict(rpb=t(2, 5, 5, dtype=torch.float64)),
        r"rpb and query must have the same dtype, got torch.float64 and torch.float32",
    ),
    (
        "key shape",
        dict(key=t(1, 9, 11, 2, 8)),
        r"query \(1, 9, 10, 2, 8\) and key \(1, 9, 11, 2, 8\)",
    ),
    (
        "head dim",
        dict(key=t(1, 9, 10, 2, 4)),
        r"query and key must have the same head dim, got 8 and 4",
    ),
    (
        "key dtype",
        dict(key=t(1, 9, 10, 2, 8, dtype=torch.float64)),
        r"query and key must have the same dtype, got torch.float32 and torch.float64",
    ),
    (
        "value shape",
        dict(value=t(1, 9, 10, 3, 8)),
        r"query .* and value .* same shape except the last",
    ),
    (
        "integer dtype",
        dict(query=torch.ones(1, 9, 10, 2, 8, dtype=torch.int64)),
        r"query must be a floating-point tensor, got torch.int64",
    ),
    (
        "rank",
        dict(query=t(9, 10, 2, 8)),
        r"query must have shape \(batch, height, width, heads, dim\)",
    ),
    ("not a tensor", dict(rpb="bias"), r"rpb must have shape .* got str"),
]


@pytest.mark.parametrize("name,override,message", BAD_NA2D, ids=[c[0] for c in BAD_NA2D])
def test_na2d_bad_input(name, override, message):
    args = dict(query=Q, key=Q.clone(), value=Q.clone(), kernel_size=3, dilation=1, rpb=RPB)
    args.update(override)
    with pytest.raises(ValueError, match=message):
        na2d(**args)


def test_device_mismatch_is_named():
    meta = torch.empty(1, 9, 10, 2, 8, device="meta")
    with pytest.raises(
        ValueError, match=r"query and key must be on the same device, got cpu and meta"
    ):
        na2d_qk(Q, meta, 3)


def test_av_bad_attn():
    with pytest.raises(
        ValueError, match=r"attn must have shape .* = \(1, 9, 10, 2, 9\) .* got \(1, 9, 10, 2, 25\)"
    ):
        na2d_av(t(1, 9, 10, 2, 25), Q, 3)
    with pytest.raises(ValueError, match=r"attn and value must have the same dtype"):
        na2d_av(ATTN.double(), Q, 3)


def test_1d_messages():
    with pytest.raises(
        ValueError,
        match=r"na1d: query has spatial size \(7,\) .* needs at least \(9,\) \(axis 0: 7 < 3\*3\)",
    ):
        na1d(t(1, 7, 1, 4), t(1, 7, 1, 4), t(1, 7, 1, 4), 3, dilation=3)
    with pytest.raises(ValueError, match=r"na1d: rpb must have shape .* = \(1, 5\)"):
        na1d(t(1, 7, 1, 4), t(1, 7, 1, 4), t(1, 7, 1, 4), 3, dilation=1, rpb=t(1, 5, 5))


@requires_native
@pytest.mark.parametrize(
    "call,message",
    [
        (lambda ops: ops.na_qk(Q, Q, None, [4, 3], [1, 1]), r"kernel_size must be odd and >= 3"),
        (lambda ops: ops.na_qk(Q, Q, None, [3, 3], [0, 1]), r"dilation must be >= 1"),
        (
            lambda ops: ops.na_qk(Q, Q, None, [3, 3, 3], [1, 1, 1]),
            r"kernel_size must have one entry per spatial axis",
        ),
        (lambda ops: ops.na_qk(Q, Q, None, [3, 3], [1]), r"dilation must have 2 entries"),
        (
            lambda ops: ops.na_qk(Q, Q, None, [5, 5], [2, 2]),
            r"spatial axis 0 of query has length 9 but kernel_size 5 with dilation 2 needs at "
            r"least 10",
        ),
        (lambda ops: ops.na_qk(Q, Q[..., :4], None, [3, 3], [1, 1]), r"must have the same shape"),
        (
            lambda ops: ops.na_qk(Q, Q, RPB[:, :3], [3, 3], [1, 1]),
            r"rpb must have shape .*\[2, 5, 5\]",
        ),
        (
            lambda ops: ops.na_qk(Q.long(), Q.long(), None, [3, 3], [1, 1]),
            r"must be a floating-point tensor",
        ),
        (lambda ops: ops.na_av(ATTN[..., :4], Q, [3, 3], [1, 1]), r"attn must have shape"),
        (lambda ops: ops.na_qk_backward(ATTN, Q, Q, [5, 5], [1, 1]), r"grad_attn must have shape"),
        (lambda ops: ops.na_rpb_backward(ATTN, [5, 5], [1, 1]), r"prod\(kernel_size\) = 25, got 9"),
    ],
)
def test_raw_native_ops_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(torch.ops.dinat_m2f)


@pytest.mark.parametrize(
    "call",
    [
        lambda: na2d(Q, Q, Q, 3, 1),
        lambda: na2d(Q, Q, Q, 3, 1, RPB),
        lambda: na2d_qk(Q, Q, 3, 1),
        lambda: na2d_av(ATTN, Q, 3, 1),
        lambda: na1d(t(1, 7, 1, 4), t(1, 7, 1, 4), t(1, 7, 1, 4), 3, 1),
    ],
)
def test_arguments_after_kernel_size_are_keyword_only(call):
    # NATTEN's functions take other arguments in those positions: a positional rpb or
    # dilation must not silently land in the wrong one
    with pytest.raises(TypeError, match="positional argument"):
        call()


# (op, args, message): the native ops' fake kernels run the public functions' checks, so a
# traced (torch.compile / FakeTensor) call fails like an eager one.
FAKE_BAD = [
    (
        "na_qk",
        (Q, Q[..., :4], None, [3, 3], [1, 1]),
        r"na_qk: query and key must have the same head dim",
    ),
    (
        "na_qk",
        (Q, Q, None, [5, 5], [2, 2]),
        r"na_qk: query has spatial size \(9, 10\) .* needs at least",
    ),
    ("na_qk", (Q, Q, RPB[:, :3], [3, 3], [1, 1]), r"na_qk: rpb must have shape .* = \(2, 5, 5\)"),
    (
        "na_qk",
        (Q, Q, None, [3, 3, 3], [1, 1, 1]),
        r"na_qk: kernel_size must have one entry per spatial axis",
    ),
    ("na_av", (ATTN[..., :4], Q, [3, 3], [1, 1]), r"na_av: attn must have shape"),
    ("na_qk_backward", (ATTN, Q, Q, [5, 5], [1, 1]), r"na_qk_backward: grad_attn must have shape"),
    (
        "na_av_backward",
        (Q[..., :4], ATTN, Q, [3, 3], [1, 1]),
        r"na_av_backward: grad_out and value must have the same head dim",
    ),
    (
        "na_rpb_backward",
        (ATTN, [5, 5], [1, 1]),
        r"na_rpb_backward: grad_attn's last dim must be prod\(kernel_size\) = 25, got 9",
    ),
]


@requires_native
@pytest.mark.parametrize(
    "op,args,message", FAKE_BAD, ids=[f"{c[0]}-{i}" for i, c in enumerate(FAKE_BAD)]
)
def test_fake_kernels_run_the_same_checks(op, args, message):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises(ValueError, match=message):
            getattr(torch.ops.dinat_m2f, op)(*fake)
