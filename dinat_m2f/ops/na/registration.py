"""Fake kernels and autograd of the native NA ops `torch.ops.dinat_m2f.na_*`.

The schemas are declared once in C++ (native/op_schemas.h) and implemented per device
(native/na/). The fake kernels run the same argument checks as the public functions
(checks.py), so torch.compile and torch.library.opcheck trace them with the same errors; the
autograd formulas call the native backward ops. Registered for dinat_m2f:: when the extension
is loaded; `register_library` registers them for another library with the same schemas (the
tests' emulated device, tests/emulated_device.py). The fused CPU op `na_fused` (out and the
log2-sum-exp per query; its backward recomputes the scores) exists in dinat_m2f:: only, and
its autograd is registered in C++ (native/na/na_cpu_fused_autograd.cpp), which costs less
per call than a Python one.
"""

from __future__ import annotations

import math

import torch

from ..library import LIBRARY, NATIVE_AVAILABLE
from . import checks


def _tokens_like(x: torch.Tensor, last: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], last))


def _window(op: str, kernel_size, dilation) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    rank = checks.rank_of(op, kernel_size)
    kernel, dil = checks.kernel_and_dilation(op, list(kernel_size), list(dilation), rank)
    return rank, kernel, dil


def _qk_setup_context(ctx, inputs, output):
    query, key, rpb, kernel_size, dilation = inputs
    ctx.save_for_backward(query, key)
    ctx.window = (kernel_size, dilation)
    ctx.has_rpb = rpb is not None


def _qk_backward_of(ops):
    """The autograd formula of `ops`.na_qk, with `ops`' backward ops."""

    def backward(ctx, grad_attn):
        query, key = ctx.saved_tensors
        kernel_size, dilation = ctx.window
        grad_query = grad_key = grad_rpb = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_query, grad_key = ops.na_qk_backward(grad_attn, query, key, kernel_size, dilation)
        if ctx.has_rpb and ctx.needs_input_grad[2]:
            grad_rpb = ops.na_rpb_backward(grad_attn, kernel_size, dilation)
        return grad_query, grad_key, grad_rpb, None, None

    return backward


def _av_setup_context(ctx, inputs, output):
    attn, value, kernel_size, dilation = inputs
    ctx.save_for_backward(attn, value)
    ctx.window = (kernel_size, dilation)


def _av_backward_of(ops):
    """The autograd formula of `ops`.na_av, with `ops`' backward op."""

    def backward(ctx, grad_out):
        attn, value = ctx.saved_tensors
        kernel_size, dilation = ctx.window
        grad_attn, grad_value = ops.na_av_backward(grad_out, attn, value, kernel_size, dilation)
        return grad_attn, grad_value, None, None

    return backward


def _na_qk_fake(query, key, rpb, kernel_size, dilation):
    rank = checks.rank_of("na_qk", kernel_size)
    checks.qk_inputs("na_qk", query, key, list(kernel_size), list(dilation), rpb, rank)
    return _tokens_like(query, math.prod(kernel_size))


def _na_av_fake(attn, value, kernel_size, dilation):
    rank = checks.rank_of("na_av", kernel_size)
    checks.av_inputs("na_av", attn, value, list(kernel_size), list(dilation), rank)
    return _tokens_like(value, value.shape[-1])


def _na_qk_backward_fake(grad_attn, query, key, kernel_size, dilation):
    op = "na_qk_backward"
    rank = checks.rank_of(op, kernel_size)
    kernel, _ = checks.qk_inputs(op, query, key, list(kernel_size), list(dilation), None, rank)
    checks.attn_tensor(op, grad_attn, kernel, query, name="grad_attn", like="query")
    return _tokens_like(query, query.shape[-1]), _tokens_like(key, key.shape[-1])


def _na_av_backward_fake(grad_out, attn, value, kernel_size, dilation):
    op = "na_av_backward"
    rank = checks.rank_of(op, kernel_size)
    checks.av_inputs(op, attn, value, list(kernel_size), list(dilation), rank)
    checks.tokens_tensor(op, "grad_out", grad_out, rank)
    checks.same_placement(op, "grad_out", grad_out, "value", value)
    checks.same_shape(op, "grad_out", grad_out, "value", value)
    return _tokens_like(value, math.prod(kernel_size)), _tokens_like(value, value.shape[-1])


def _na_rpb_backward_fake(grad_attn, kernel_size, dilation):
    op = "na_rpb_backward"
    rank, kernel, dil = _window(op, kernel_size, dilation)
    checks.tokens_tensor(op, "grad_attn", grad_attn, rank)
    checks.large_enough(op, "grad_attn", grad_attn, kernel, dil)
    if grad_attn.shape[-1] != math.prod(kernel):
        raise ValueError(
            f"{op}: grad_attn's last dim must be prod(kernel_size) = {math.prod(kernel)}, "
            f"got {grad_attn.shape[-1]}"
        )
    heads = grad_attn.shape[-2]
    return grad_attn.new_empty((heads, *(2 * k - 1 for k in kernel)))


def _fused_check(op, query, key, value, rpb, kernel_size, dilation):
    rank = checks.rank_of(op, kernel_size)
    checks.qkv_inputs(op, query, key, value, list(kernel_size), list(dilation), rpb, rank)


def _lse_dtype(query: torch.Tensor) -> torch.dtype:
    """The log-sum-exp is kept in float64 for float64 inputs, else in float32."""
    return torch.float64 if query.dtype == torch.float64 else torch.float32


def _na_fused_fake(query, key, value, rpb, kernel_size, dilation, scale):
    _fused_check("na_fused", query, key, value, rpb, kernel_size, dilation)
    return value.new_empty(value.shape), query.new_empty(query.shape[:-1], dtype=_lse_dtype(query))


def _na_fused_backward_fake(
    grad_out, query, key, value, rpb, out, lse, kernel_size, dilation, scale
):
    _fused_check("na_fused_backward", query, key, value, rpb, kernel_size, dilation)
    grad_rpb = query.new_empty((0,)) if rpb is None else rpb.new_empty(rpb.shape)
    return (
        query.new_empty(query.shape),
        key.new_empty(key.shape),
        value.new_empty(value.shape),
        grad_rpb,
    )


def _register_fused() -> None:
    """The fake kernels of the fused CPU op of dinat_m2f:: (no other library has it); its
    autograd is C++ (native/na/na_cpu_fused_autograd.cpp)."""
    torch.library.register_fake("dinat_m2f::na_fused")(_na_fused_fake)
    torch.library.register_fake("dinat_m2f::na_fused_backward")(_na_fused_backward_fake)


def register_library(namespace: str) -> None:
    """Fake kernels and autograd of the NA ops of the torch library `namespace` (dinat_m2f, or
    a library with its schemas: the tests' emulated device)."""
    fakes = {
        "na_qk": _na_qk_fake,
        "na_av": _na_av_fake,
        "na_qk_backward": _na_qk_backward_fake,
        "na_av_backward": _na_av_backward_fake,
        "na_rpb_backward": _na_rpb_backward_fake,
    }
    for op, fake in fakes.items():
        torch.library.register_fake(f"{namespace}::{op}")(fake)
    ops = getattr(torch.ops, namespace)
    torch.library.register_autograd(
        f"{namespace}::na_qk", _qk_backward_of(ops), setup_context=_qk_setup_context
    )
    torch.library.register_autograd(
        f"{namespace}::na_av", _av_backward_of(ops), setup_context=_av_setup_context
    )


if NATIVE_AVAILABLE:
    register_library(LIBRARY)
    if hasattr(torch.ops.dinat_m2f, "na_fused"):  # not in builds from before the op
        _register_fused()
