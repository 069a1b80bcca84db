"""Neighborhood attention (NA) and dilated NA (DiNA) as functions, 1D and 2D.

Layout is heads-last: query, key, value are (batch, *spatial, heads, dim); attention logits
and weights are (batch, *spatial, heads, prod(kernel_size)), neighbors row-major over the
window. `kernel_size` is an int or one int per spatial axis; every argument after it is
keyword-only. The semantics (NATTEN's, which DiNAT checkpoints were trained with) and how the
API differs from NATTEN's are in docs/na_ops.md.

The arguments are checked here (dinat_m2f.ops.na.checks); dinat_m2f.ops picks the
implementation (native kernels, or the pure-PyTorch twin where the extension is not built).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..ops.na import attention as _attention_op
from ..ops.na import av as _av_op
from ..ops.na import checks
from ..ops.na import qk as _qk_op

IntOrTuple = int | Sequence[int]


def _qk(op, rank, query, key, kernel_size, dilation, rpb):
    kernel, dil = checks.qk_inputs(op, query, key, kernel_size, dilation, rpb, rank)
    return _qk_op(query, key, rpb, kernel, dil)


def _av(op, rank, attn, value, kernel_size, dilation):
    kernel, dil = checks.av_inputs(op, attn, value, kernel_size, dilation, rank)
    return _av_op(attn, value, kernel, dil)


def _na(op, rank, query, key, value, kernel_size, dilation, rpb, scale, backend):
    kernel, dil = checks.qkv_inputs(op, query, key, value, kernel_size, dilation, rpb, rank)
    if scale is None:
        scale = query.shape[-1] ** -0.5
    return _attention_op(op, query, key, value, rpb, kernel, dil, scale, backend)


def na1d_qk(
    query: torch.Tensor,
    key: torch.Tensor,
    kernel_size: IntOrTuple,
    *,
    dilation: IntOrTuple = 1,
    rpb: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention logits of 1D neighborhood attention, without scaling (scale the query first).

    logits[i, j] = <query[i], key[neighbor j of i]> + rpb[head, bias index of neighbor j].

    Args:
        query, key: the tokens; same shape, dtype and device.
        kernel_size: odd window size >= 3.
        dilation: >= 1; the length must be at least kernel_size * dilation.
        rpb: relative positional bias, or None.

    Shape:
        query, key: (batch, length, heads, dim); rpb: (heads, 2 * kernel_size - 1);
        returns (batch, length, heads, kernel_size).
    """
    return _qk("na1d_qk", 1, query, key, kernel_size, dilation, rpb)


def na2d_qk(
    query: torch.Tensor,
    key: torch.Tensor,
    kernel_size: IntOrTuple,
    *,
    dilation: IntOrTuple = 1,
    rpb: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention logits of 2D neighborhood attention, without scaling (scale the query first).

    Args:
        query, key: the tokens; same shape, dtype and device.
        kernel_size: odd window size >= 3, an int or (kh, kw).
        dilation: >= 1, an int or (dh, dw); each axis must be at least kernel * dilation.
        rpb: relative positional bias, or None.

    Shape:
        query, key: (batch, height, width, heads, dim); rpb: (heads, 2kh - 1, 2kw - 1);
        returns (batch, height, width, heads, kh * kw), neighbors row-major.
    """
    return _qk("na2d_qk", 2, query, key, kernel_size, dilation, rpb)


def na1d_av(
    attn: torch.Tensor,
    value: torch.Tensor,
    kernel_size: IntOrTuple,
    *,
    dilation: IntOrTuple = 1,
) -> torch.Tensor:
    """Applies 1D neighborhood-attention weights: out[i] = sum_j attn[i, j] value[neighbor j].

    Args:
        attn: weights (usually a softmax of na1d_qk's logits).
        value: the tokens attended to.
        kernel_size, dilation: as for na1d_qk.

    Shape:
        attn: (batch, length, heads, kernel_size); value: (batch, length, heads, dim);
        returns (batch, length, heads, dim).
    """
    return _av("na1d_av", 1, attn, value, kernel_size, dilation)


def na2d_av(
    attn: torch.Tensor,
    value: torch.Tensor,
    kernel_size: IntOrTuple,
    *,
    dilation: IntOrTuple = 1,
) -> torch.Tensor:
    """Applies 2D neighborhood-attention weights: out[i] = sum_j attn[i, j] value[neighbor j].

    Args:
        attn: weights (usually a softmax of na2d_qk's logits).
        value: the tokens attended to.
        kernel_size, dilation: as for na2d_qk.

    Shape:
        attn: (batch, height, width, heads, kh * kw); value: (batch, height, width, heads, dim);
        returns (batch, height, width, heads, dim).
    """
    return _av("na2d_av", 2, attn, value, kernel_size, dilation)


def na1d(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kernel_size: IntOrTuple,
    *,
    dilation: IntOrTuple = 1,
    rpb: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """1D neighborhood attention: softmax(scale * q.k + rpb) . v over each token's window.

    Args:
        query, key, value: the tokens; one dtype and device; value may have another head dim.
        kernel_size: odd window size >= 3.
        dilation: >= 1; the length must be at least kernel_size * dilation.
        rpb: relative positional bias, or None.
        scale: logit scale; None means dim ** -0.5.
        backend: "auto" (fused kernels for CUDA tensors where they apply, else unfused),
            "fused", "unfused" or "reference"; None means DINAT_M2F_NA_BACKEND, else "auto".
            See docs/na_ops.md.

    Shape:
        query, key: (batch, length, heads, dim); value: (batch, length, heads, dim_v);
        rpb: (heads, 2 * kernel_size - 1); returns (batch, length, heads, dim_v).
    """
    return _na("na1d", 1, query, key, value, kernel_size, dilation, rpb, scale, backend)


def na2d(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kernel_size: IntOrTuple,
    *,
    dilation: IntOrTuple = 1,
    rpb: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """2D neighborhood attention: softmax(scale * q.k + rpb) . v over each token's window.

    Args:
        query, key, value: the tokens; one dtype and device; value may have another head dim.
        kernel_size: odd window size >= 3, an int or (kh, kw).
        dilation: >= 1, an int or (dh, dw); each axis must be at least kernel * dilation
            (NeighborhoodAttention2D pads smaller inputs).
        rpb: relative positional bias, or None.
        scale: logit scale; None means dim ** -0.5.
        backend: "auto" (fused kernels for CUDA tensors where they apply, else unfused),
            "fused", "unfused" or "reference"; None means DINAT_M2F_NA_BACKEND, else "auto".
            See docs/na_ops.md.

    Shape:
        query, key: (batch, height, width, heads, dim); value: (batch, height, width, heads,
        dim_v); rpb: (heads, 2kh - 1, 2kw - 1); returns (batch, height, width, heads, dim_v).
    """
    return _na("na2d", 2, query, key, value, kernel_size, dilation, rpb, scale, backend)
