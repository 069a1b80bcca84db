"""Pure-PyTorch (gather-based) neighborhood attention: the fallback when the native extension
is not built and the oracle the native kernels are tested against.

It gathers every query's k*k keys into one tensor, so it uses prod(kernel_size) times the
memory of the inputs; autograd comes from PyTorch. Inputs are assumed checked (checks.py).
"""

from __future__ import annotations

import math

import torch


def axis_windows(
    length: int, kernel: int, dilation: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbors (length, kernel) of every token on one axis and their bias indices.

    Token i is in dilation group i % d at in-group position p = i // d; its window starts at
    clamp(p - k//2, 0, group_len - k) in group coordinates; bias index = start + j - p + k - 1.
    """
    index = torch.arange(length, device=device)
    group, pos = index % dilation, index // dilation
    group_len = (length - group + dilation - 1) // dilation
    start = torch.minimum((pos - kernel // 2).clamp(min=0), group_len - kernel)
    offsets = torch.arange(kernel, device=device)
    neighbors = group[:, None] + (start[:, None] + offsets) * dilation
    bias = start[:, None] + offsets - pos[:, None] + kernel - 1
    return neighbors, bias


def flat_windows(
    spatial: tuple[int, ...],
    kernel: tuple[int, ...],
    dilation: tuple[int, ...],
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, prod(kernel)) flat neighbor indices and flat bias indices over all axes,
    tokens and neighbors both row-major."""
    neighbors = torch.zeros(1, 1, dtype=torch.long, device=device)
    bias = torch.zeros(1, 1, dtype=torch.long, device=device)
    for length, k, d in zip(spatial, kernel, dilation):
        axis_n, axis_b = axis_windows(length, k, d, device)
        tokens, window = neighbors.shape
        neighbors = (neighbors[:, None, :, None] * length + axis_n[None, :, None, :]).reshape(
            tokens * length, window * k
        )
        bias = (bias[:, None, :, None] * (2 * k - 1) + axis_b[None, :, None, :]).reshape(
            tokens * length, window * k
        )
    return neighbors, bias


def _gather_neighbors(x: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """(batch, *spatial, heads, dim) -> (batch, tokens, K, heads, dim)."""
    batch, heads, dim = x.shape[0], x.shape[-2], x.shape[-1]
    return x.reshape(batch, -1, heads, dim)[:, neighbors]


def na_qk_reference(
    query: torch.Tensor,
    key: torch.Tensor,
    rpb: torch.Tensor | None,
    kernel: tuple[int, ...],
    dilation: tuple[int, ...],
) -> torch.Tensor:
    """Logits (batch, *spatial, heads, K): <query, neighbor key> (+ rpb)."""
    if query.numel() == 0:  # no window tables for a batch of nothing, however large the map
        return query.new_empty((*query.shape[:-1], math.prod(kernel)))
    spatial = tuple(query.shape[1:-2])
    batch, heads, dim = query.shape[0], query.shape[-2], query.shape[-1]
    neighbors, bias = flat_windows(spatial, kernel, dilation, query.device)
    keys = _gather_neighbors(key, neighbors)
    logits = torch.einsum("bthd,btkhd->bthk", query.reshape(batch, -1, heads, dim), keys)
    if rpb is not None:
        logits = logits + rpb.reshape(heads, -1)[:, bias].permute(1, 0, 2)
    return logits.reshape(*query.shape[:-1], neighbors.shape[1])


def na_av_reference(
    attn: torch.Tensor, value: torch.Tensor, kernel: tuple[int, ...], dilation: tuple[int, ...]
) -> torch.Tensor:
    """Output (batch, *spatial, heads, dim): attention-weighted sum of neighbor values."""
    if value.numel() == 0 or attn.numel() == 0:
        return value.new_zeros(value.shape)
    spatial = tuple(value.shape[1:-2])
    batch, heads = value.shape[0], value.shape[-2]
    neighbors, _ = flat_windows(spatial, kernel, dilation, value.device)
    values = _gather_neighbors(value, neighbors)
    out = torch.einsum("bthk,btkhd->bthd", attn.reshape(batch, -1, heads, attn.shape[-1]), values)
    return out.reshape(value.shape)
