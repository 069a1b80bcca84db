"""Fake (meta) kernels and autograd of the native ops `torch.ops.dinat_m2f.na_*`.

The ops themselves are declared and implemented in C++ (native/na/na_ops.cpp); registering
their fake kernels lets torch.compile and torch.library.opcheck trace them, and their
autograd formulas call the native backward ops.
"""

from __future__ import annotations

import math

import torch

from .._native import NATIVE_AVAILABLE


def _tokens_like(x: torch.Tensor, last: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], last))


def _rpb_shape(heads: int, kernel_size: list[int]) -> tuple[int, ...]:
    return (heads, *(2 * k - 1 for k in kernel_size))


def _qk_setup_context(ctx, inputs, output):
    query, key, rpb, kernel_size, dilation = inputs
    ctx.save_for_backward(query, key)
    ctx.window = (kernel_size, dilation)
    ctx.has_rpb = rpb is not None


def _qk_backward(ctx, grad_attn):
    query, key = ctx.saved_tensors
    kernel_size, dilation = ctx.window
    grad_query = grad_key = grad_rpb = None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
        grad_query, grad_key = torch.ops.dinat_m2f.na_qk_backward(
            grad_attn, query, key, kernel_size, dilation
        )
    if ctx.has_rpb and ctx.needs_input_grad[2]:
        grad_rpb = torch.ops.dinat_m2f.na_rpb_backward(grad_attn, kernel_size, dilation)
    return grad_query, grad_key, grad_rpb, None, None


def _av_setup_context(ctx, inputs, output):
    attn, value, kernel_size, dilation = inputs
    ctx.save_for_backward(attn, value)
    ctx.window = (kernel_size, dilation)


def _av_backward(ctx, grad_out):
    attn, value = ctx.saved_tensors
    kernel_size, dilation = ctx.window
    grad_attn, grad_value = torch.ops.dinat_m2f.na_av_backward(
        grad_out, attn, value, kernel_size, dilation
    )
    return grad_attn, grad_value, None, None


def _register() -> None:
    register_fake = torch.library.register_fake

    @register_fake("dinat_m2f::na_qk")
    def _na_qk_fake(query, key, rpb, kernel_size, dilation):
        return _tokens_like(query, math.prod(kernel_size))

    @register_fake("dinat_m2f::na_av")
    def _na_av_fake(attn, value, kernel_size, dilation):
        return _tokens_like(value, value.shape[-1])

    @register_fake("dinat_m2f::na_qk_backward")
    def _na_qk_backward_fake(grad_attn, query, key, kernel_size, dilation):
        return _tokens_like(query, query.shape[-1]), _tokens_like(key, key.shape[-1])

    @register_fake("dinat_m2f::na_av_backward")
    def _na_av_backward_fake(grad_out, attn, value, kernel_size, dilation):
        return _tokens_like(value, math.prod(kernel_size)), _tokens_like(value, value.shape[-1])

    @register_fake("dinat_m2f::na_rpb_backward")
    def _na_rpb_backward_fake(grad_attn, kernel_size, dilation):
        return grad_attn.new_empty(_rpb_shape(grad_attn.shape[-2], kernel_size))

    # test-only ops running the CUDA tiled kernels' block programs on the CPU
    @register_fake("dinat_m2f::_na_qk_tiled_emulation")
    def _na_qk_tiled_emulation_fake(query, key, rpb, kernel_size, dilation, tile, chunk):
        return _tokens_like(query, math.prod(kernel_size))

    @register_fake("dinat_m2f::_na_av_tiled_emulation")
    def _na_av_tiled_emulation_fake(attn, value, kernel_size, dilation, tile, chunk):
        return _tokens_like(value, value.shape[-1])

    torch.library.register_autograd(
        "dinat_m2f::na_qk", _qk_backward, setup_context=_qk_setup_context
    )
    torch.library.register_autograd(
        "dinat_m2f::na_av", _av_backward, setup_context=_av_setup_context
    )


if NATIVE_AVAILABLE:
    _register()
