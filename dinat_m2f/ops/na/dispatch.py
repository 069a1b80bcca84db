"""Which implementation computes an NA op: the native kernels when the extension is built for
the tensors' device (library.native_ops(): the emulated device's inside
library.use_emulated_device()), else the pure-PyTorch twin (with one warning per device type).

Arguments are assumed checked (checks.py) and normalised to per-axis tuples.
"""

from __future__ import annotations

import torch

from ..library import native_ops, native_supports, warn_fallback_once
from .reference import na_av_reference, na_qk_reference


def qk(
    query: torch.Tensor,
    key: torch.Tensor,
    rpb: torch.Tensor | None,
    kernel: tuple[int, ...],
    dilation: tuple[int, ...],
) -> torch.Tensor:
    """Logits (batch, *spatial, heads, prod(kernel)): <query, neighbor key> (+ rpb)."""
    if native_supports(query.device, "na"):
        return native_ops().na_qk(query, key, rpb, list(kernel), list(dilation))
    warn_fallback_once(query.device, "na")
    return na_qk_reference(query, key, rpb, kernel, dilation)


def av(
    attn: torch.Tensor, value: torch.Tensor, kernel: tuple[int, ...], dilation: tuple[int, ...]
) -> torch.Tensor:
    """Output (batch, *spatial, heads, dim): attention-weighted sum of neighbor values."""
    if native_supports(value.device, "na"):
        return native_ops().na_av(attn, value, list(kernel), list(dilation))
    warn_fallback_once(value.device, "na")
    return na_av_reference(attn, value, kernel, dilation)
