"""Neighborhood attention (NA) and dilated NA (DiNA) as functions, 1D and 2D.

Layout is heads-last: query, key, value are (batch, *spatial, heads, dim); attention logits
and weights are (batch, *spatial, heads, prod(kernel_size)), neighbors row-major over the
window. `kernel_size` and `dilation` are an int or one int per spatial axis. The semantics
(NATTEN's, which DiNAT checkpoints were trained with) are in docs/na-semantics.md.

The native kernels (torch.ops.dinat_m2f.*) run when the extension is built for the tensors'
device; otherwise the pure-PyTorch implementation in na_reference does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._native import native_supports, warn_fallback_once
from . import na_checks
from . import na_native  # noqa: F401  (registers the native ops' fake kernels and autograd)
from .na_reference import na_av_reference, na_qk_reference

IntOrTuple = int | Sequence[int]


def _run_qk(query, key, rpb, kernel: tuple[int, ...], dilation: tuple[int, ...]):
    if native_supports(query.device):
        return torch.ops.dinat_m2f.na_qk(query, key, rpb, list(kernel), list(dilation))
    warn_fallback_once(query.device)
    return na_qk_reference(query, key, rpb, kernel, dilation)


def _run_av(attn, value, kernel: tuple[int, ...], dilation: tuple[int, ...]):
    if native_supports(value.device):
        return torch.ops.dinat_m2f.na_av(attn, value, list(kernel), list(dilation))
    warn_fallback_once(value.device)
    return na_av_reference(attn, value, kernel, dilation)


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    if logits.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(logits, dim=-1, dtype=torch.float32).to(logits.dtype)
    return torch.softmax(logits, dim=-1)


def _qk(op, rank, query, key, kernel_size, dilation, rpb):
    kernel, dil = na_checks.qk_inputs(op, query, key, kernel_size, dilation, rpb, rank)
    return _run_qk(query, key, rpb, kernel, dil)


def _av(op, rank, attn, value, kernel_size, dilation):
    kernel, dil = na_checks.av_inputs(op, attn, value, kernel_size, dilation, rank)
    return _run_av(attn, value, kernel, dil)


def _na(op, rank, query, key, value, kernel_size, dilation, rpb, scale):
    kernel, dil = na_checks.qkv_inputs(op, query, key, value, kernel_size, dilation, rpb, rank)
    if scale is None:
        scale = query.shape[-1] ** -0.5
    attn = _softmax(_run_qk(query * scale, key, rpb, kernel, dil))
    return _run_av(attn, value, kernel, dil)


def na1d_qk(
    query: torch.Tensor,
    key: torch.Tensor,
    kernel_size: IntOrTuple,
    dilation: IntOrTuple = 1,
    rpb: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention logits of 1D NA: (B, L, heads, D) x2 -> (B, L, heads, kernel_size).

    logits[i, j] = <query[i], key[neighbor j of i]> + rpb[head, bias index of j]. No scaling:
    scale the query first. rpb: (heads, 2*kernel_size-1) or None.
    """
    return _qk("na1d_qk", 1, query, key, kernel_size, dilation, rpb)


def na2d_qk(
    query: torch.Tensor,
    key: torch.Tensor,
    kernel_size: IntOrTuple,
    dilation: IntOrTuple = 1,
    rpb: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention logits of 2D NA: (B, H, W, heads, D) x2 -> (B, H, W, heads, kh*kw).

    rpb: (heads, 2*kh-1, 2*kw-1) or None. No scaling: scale the query first.
    """
    return _qk("na2d_qk", 2, query, key, kernel_size, dilation, rpb)


def na1d_av(
    attn: torch.Tensor, value: torch.Tensor, kernel_size: IntOrTuple, dilation: IntOrTuple = 1
) -> torch.Tensor:
    """Applies 1D NA weights: (B, L, heads, kernel_size) and (B, L, heads, D) -> (B, L, heads, D)."""
    return _av("na1d_av", 1, attn, value, kernel_size, dilation)


def na2d_av(
    attn: torch.Tensor, value: torch.Tensor, kernel_size: IntOrTuple, dilation: IntOrTuple = 1
) -> torch.Tensor:
    """Applies 2D NA weights: (B, H, W, heads, kh*kw) and (B, H, W, heads, D) -> (B, H, W, heads, D)."""
    return _av("na2d_av", 2, attn, value, kernel_size, dilation)


def na1d(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kernel_size: IntOrTuple,
    dilation: IntOrTuple = 1,
    rpb: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """1D neighborhood attention: softmax(scale * q.k + rpb) . v over each token's window.

    query, key: (B, L, heads, D); value: (B, L, heads, Dv) -> (B, L, heads, Dv).
    scale defaults to D ** -0.5.
    """
    return _na("na1d", 1, query, key, value, kernel_size, dilation, rpb, scale)


def na2d(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kernel_size: IntOrTuple,
    dilation: IntOrTuple = 1,
    rpb: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """2D neighborhood attention: softmax(scale * q.k + rpb) . v over each token's window.

    query, key: (B, H, W, heads, D); value: (B, H, W, heads, Dv) -> (B, H, W, heads, Dv).
    scale defaults to D ** -0.5; rpb: (heads, 2*kh-1, 2*kw-1) or None.
    """
    return _na("na2d", 2, query, key, value, kernel_size, dilation, rpb, scale)
