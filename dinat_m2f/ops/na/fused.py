"""Fused neighborhood attention with RPB, forward and backward, in Triton (fused_kernels.py),
registered as torch ops so that torch.compile(fullgraph=True) sees them:

    dinat_m2f_triton::na_fused(query, key, value, rpb?, kernel_size, dilation, scale)
        -> (out, lse)
    dinat_m2f_triton::na_fused_backward(grad_out, query, key, value, rpb?, out, lse,
        kernel_size, dilation, scale) -> (grad_query, grad_key, grad_value, grad_rpb?)

The forward keeps only the output and the per-query log-sum-exp for the backward (no
prod(kernel_size)-sized attention map), and the backward recomputes the scores. The kernels
run on CUDA tensors, and on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1 set
before Triton is imported), which is how CI tests them. Arguments are assumed checked
(checks.py); `unsupported` says why a problem cannot take this path.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch.library import custom_op, triton_op, wrap_triton

from . import fused_plan

NAMESPACE = "dinat_m2f_triton"
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_KERNEL = 13
HEAD_DIMS = (16, 128)
# dRPB partial sums per (split, head): programs add into split pid % SPLITS, which spreads
# the atomics of one head over more addresses
DRPB_SPLITS = 16


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


_TRITON = _triton_importable()


def triton_available() -> bool:
    return _TRITON


def unsupported(query: torch.Tensor, value: torch.Tensor, kernel: tuple[int, ...]) -> str | None:
    """Why the fused kernels cannot compute this problem, or None when they can."""
    if not triton_available():
        return "Triton is not installed"
    if query.device.type == "cpu" and not interpreting():
        return "CPU tensors need Triton's interpreter (TRITON_INTERPRET=1)"
    if query.device.type not in ("cuda", "cpu"):
        return f"no Triton kernels for {query.device.type} tensors"
    if query.dtype not in DTYPES:
        return f"dtype {query.dtype} (the fused kernels take float16, bfloat16 and float32)"
    if max(kernel) > MAX_KERNEL:
        return f"kernel_size {kernel} (the fused kernels take 3..{MAX_KERNEL})"
    lo, hi = HEAD_DIMS
    for name, dim in (("query", query.shape[-1]), ("value", value.shape[-1])):
        if not lo <= dim <= hi:
            return f"{name} head dim {dim} (the fused kernels take {lo}..{hi})"
    return None


def _kernels():
    # imported on first use: Triton decides at import whether kernels are interpreted
    from . import fused_kernels

    return fused_kernels


class KernelCall(NamedTuple):
    """One launch of a fused kernel: its name in fused_kernels.py, its grid and arguments.
    Pointer arguments are tensors, or their dtypes for an ahead-of-time compile (Triton's
    `warmup` takes a dtype for a tensor; tools/kernel_resources.py compiles these calls)."""

    kernel: str
    grid: tuple[int, int]
    args: tuple
    kwargs: dict


def _dtype(x) -> torch.dtype:
    return x if isinstance(x, torch.dtype) else x.dtype


class Problem:
    """A problem as the kernels see it: 2D, contiguous (batch, height, width, heads, dim).
    Only the shapes of `query` and `value` are read (meta tensors will do)."""

    def __init__(self, query, value, kernel_size, dilation):
        rank = len(kernel_size)
        self.rank = rank
        # On a GPU, torch.compile and opcheck trace this op's body with symbolic sizes. The
        # tile plan (cached, so hashed) and the block sizes follow the map and the head dims:
        # those are specialised here; batch and heads stay symbolic (grid and allocations).
        spatial = [int(n) for n in query.shape[1 : 1 + rank]]
        if rank == 1:
            self.h = fused_plan.Axis(1, 1, 1)
            self.w = fused_plan.Axis(spatial[0], kernel_size[0], dilation[0])
        else:
            self.h = fused_plan.Axis(spatial[0], kernel_size[0], dilation[0])
            self.w = fused_plan.Axis(spatial[1], kernel_size[1], dilation[1])
        self.batch, self.heads = query.shape[0], query.shape[-2]
        self.dim, self.dim_v = int(query.shape[-1]), int(value.shape[-1])
        self.wide = max(self.dim, self.dim_v) > 64
        self.plan = fused_plan.plan_tiles(self.h, self.w)

    def as_2d(self, x: torch.Tensor) -> torch.Tensor:
        return (x.unsqueeze(1) if self.rank == 1 else x).contiguous()

    def from_2d(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(1) if self.rank == 1 else x

    def tokens_like(self, x: torch.Tensor, last: int | None, dtype=None) -> torch.Tensor:
        shape = (self.batch, self.h.length, self.w.length, self.heads)
        return x.new_empty(shape + ((last,) if last is not None else ()), dtype=dtype)

    def common_args(self, dtype: torch.dtype) -> dict:
        block_d = max(16, triton_next_pow2(self.dim))
        block_dv = max(16, triton_next_pow2(self.dim_v))
        return dict(
            H=self.h.length,
            W=self.w.length,
            HEADS=self.heads,
            D=self.dim,
            DV=self.dim_v,
            DH=self.h.dilation,
            DW=self.w.dilation,
            KH=self.h.kernel,
            KW=self.w.kernel,
            BLOCK_D=block_d,
            BLOCK_DV=block_dv,
            DOT_FP32=interpreting() and dtype == torch.bfloat16,
            IEEE=dtype == torch.float32,
        )

    def query_tiles(self) -> dict:
        """Grid and tile arguments of the forward and dQ kernels."""
        plan = self.plan
        return dict(
            grid=fused_plan.query_grid(self.h, self.w, plan, self.batch * self.heads),
            TILES_H=self.h.start_tiles(plan.sh),
            TILES_W=self.w.start_tiles(plan.sw),
            SH=plan.sh,
            SW=plan.sw,
            BLOCK_Q=plan.block_q,
            BLOCK_K=plan.block_k,
            # head dims above 64 spill with 4 warps, except 16 x 16 blocks, which spill with 8
            # on sm_100 (capped at 128 registers) and not with 4 (docs/kernel_resources.md)
            num_warps=8 if self.wide and plan.block_q * plan.block_k > 256 else 4,
        )

    def key_tiles(self) -> dict:
        """Grid and tile arguments of the dK/dV kernel."""
        plan = self.plan
        return dict(
            grid=fused_plan.key_grid(self.h, self.w, plan, self.batch * self.heads),
            TILES_H=self.h.key_tiles(plan.kth, plan.offset_h),
            TILES_W=self.w.key_tiles(plan.ktw, plan.offset_w),
            OFFSET_H=plan.offset_h,
            OFFSET_W=plan.offset_w,
            KTH=plan.kth,
            KTW=plan.ktw,
            BLOCK_Q_KV=plan.block_q_kv,
            num_warps=8 if self.wide else 4,  # head dims above 64 spill more with 4
        )

    def forward_call(self, q, k, v, rpb, out, lse, scale: float) -> KernelCall:
        """The forward's launch; rpb may be None."""
        tiles = self.query_tiles()
        if _dtype(q) == torch.float32 and tiles["num_warps"] == 8:
            # float32 16 x 64 blocks at head dims above 64 spill 8 B/thread on sm_80 with
            # Triton's default 3 stages (255 registers, 148 KB shared); 2 stages: 199
            # registers, 80 KB, no spill on sm_80/90/100 (docs/kernel_resources.md)
            tiles["num_stages"] = 2
        return KernelCall(
            "na_forward_kernel",
            tiles.pop("grid"),
            (q, k, v, q if rpb is None else rpb, out, lse),
            dict(scale=scale, HAS_RPB=rpb is not None, **tiles, **self.common_args(_dtype(q))),
        )

    def backward_calls(
        self, q, k, v, rpb, do, lse, delta, grad_q, grad_k, grad_v, drpb, scale: float
    ) -> tuple[KernelCall, KernelCall]:
        """The backward's two launches: dQ and dRPB per query tile, dK and dV per key tile."""
        bias = q if rpb is None else rpb
        common = dict(scale=scale, HAS_RPB=rpb is not None, **self.common_args(_dtype(q)))
        tiles = self.query_tiles()
        query_call = KernelCall(
            "na_backward_query_kernel",
            tiles.pop("grid"),
            (q, k, v, bias, do, lse, delta, grad_q, drpb),
            dict(SPLITS=DRPB_SPLITS, **tiles, **common),
        )
        tiles = self.key_tiles()
        key_call = KernelCall(
            "na_backward_key_kernel",
            tiles.pop("grid"),
            (q, k, v, bias, do, lse, delta, grad_k, grad_v),
            dict(**tiles, **common),
        )
        return query_call, key_call


def triton_next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _launch(call: KernelCall) -> None:
    wrap_triton(getattr(_kernels(), call.kernel))[call.grid](*call.args, **call.kwargs)


def _na_fused(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    rpb: torch.Tensor | None,
    kernel_size: list[int],
    dilation: list[int],
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse): out (batch, *spatial, heads, dim_v) in the inputs' dtype; lse (batch,
    *spatial, heads) float32, base 2, saved for the backward."""
    p = Problem(query, value, kernel_size, dilation)
    q, k, v = (p.as_2d(x) for x in (query, key, value))
    out = p.tokens_like(q, p.dim_v)
    lse = p.tokens_like(q, None, dtype=torch.float32)
    if out.numel() > 0:
        bias = None if rpb is None else rpb.contiguous()
        _launch(p.forward_call(q, k, v, bias, out, lse, scale))
    return p.from_2d(out), p.from_2d(lse)


def _na_fused_backward(
    grad_out: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    rpb: torch.Tensor | None,
    out: torch.Tensor,
    lse: torch.Tensor,
    kernel_size: list[int],
    dilation: list[int],
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_query, grad_key, grad_value, grad_rpb); grad_rpb is empty when rpb is None."""
    p = Problem(query, value, kernel_size, dilation)
    q, k, v, o, do = (p.as_2d(x) for x in (query, key, value, out, grad_out))
    lse2 = p.as_2d(lse)
    grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    bias_shape = (2 * p.h.kernel - 1, 2 * p.w.kernel - 1)
    drpb = q.new_zeros((DRPB_SPLITS, p.heads, *bias_shape), dtype=torch.float32)
    if q.numel() > 0:
        delta = (do.float() * o.float()).sum(-1)  # rowsum(dO * O) of the softmax backward
        bias = None if rpb is None else rpb.contiguous()
        calls = p.backward_calls(
            q, k, v, bias, do, lse2, delta, grad_q, grad_k, grad_v, drpb, scale
        )
        for call in calls:
            _launch(call)
    if rpb is None:
        grad_rpb = q.new_empty((0,))
    else:
        grad_rpb = drpb.sum(0).to(rpb.dtype).reshape(rpb.shape)
    return p.from_2d(grad_q), p.from_2d(grad_k), p.from_2d(grad_v), grad_rpb


def setup_fused_context(ctx, inputs, output):
    """Autograd context of this module's fused forward op: the inputs, the output and its
    log2-sum-exp, for the backward op."""
    query, key, value, rpb, kernel_size, dilation, scale = inputs
    out, lse = output
    ctx.save_for_backward(query, key, value, rpb, out, lse)
    ctx.window = (kernel_size, dilation, scale)
    ctx.mark_non_differentiable(lse)


def fused_backward_of(namespace: str):
    """The autograd backward of `namespace`::na_fused, through its na_fused_backward op."""

    def backward(ctx, grad_out, _grad_lse):
        query, key, value, rpb, out, lse = ctx.saved_tensors
        kernel_size, dilation, scale = ctx.window
        grad_q, grad_k, grad_v, grad_rpb = getattr(torch.ops, namespace).na_fused_backward(
            grad_out.contiguous(), query, key, value, rpb, out, lse, kernel_size, dilation, scale
        )
        return grad_q, grad_k, grad_v, (grad_rpb if rpb is not None else None), None, None, None

    return backward


def _na_fused_fake(query, key, value, rpb, kernel_size, dilation, scale):
    return value.new_empty(value.shape), value.new_empty(value.shape[:-1], dtype=torch.float32)


def _na_fused_backward_fake(
    grad_out, query, key, value, rpb, out, lse, kernel_size, dilation, scale
):
    grad_rpb = query.new_empty((0,)) if rpb is None else rpb.new_empty(rpb.shape)
    return (
        query.new_empty(query.shape),
        key.new_empty(key.shape),
        value.new_empty(value.shape),
        grad_rpb,
    )


# Registered where Triton is installed (torch's CUDA builds ship it); elsewhere `unsupported`
# says so and "auto" never picks this path.
if triton_available():
    # On a GPU the ops are triton_ops, whose kernels torch.compile sees. Under the interpreter
    # a Triton launch is a plain Python call that tracing would run on fake tensors, so there
    # they are opaque custom ops with fake kernels.
    _define = custom_op if interpreting() else triton_op
    _forward_op = _define(f"{NAMESPACE}::na_fused", mutates_args=())(_na_fused)
    _forward_op.register_autograd(fused_backward_of(NAMESPACE), setup_context=setup_fused_context)
    _backward_op = _define(f"{NAMESPACE}::na_fused_backward", mutates_args=())(_na_fused_backward)
    if interpreting():
        _forward_op.register_fake(_na_fused_fake)
        _backward_op.register_fake(_na_fused_backward_fake)


def attention(query, key, value, rpb, kernel, dilation, scale: float) -> torch.Tensor:
    """Fused NA: softmax(scale * q.k + rpb) . v; arguments checked and normalised."""
    out, _ = torch.ops.dinat_m2f_triton.na_fused(
        query, key, value, rpb, list(kernel), list(dilation), float(scale)
    )
    return out
