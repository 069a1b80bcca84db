"""Argument checks of the neighborhood-attention ops, run by the public functions
(dinat_m2f.layers.na) before any backend and by the native ops' fake kernels. Every error is a
ValueError naming the op, the argument and its value. (The native ops, which can be called
directly through torch.ops, also refuse bad input themselves: native/na/na_ops.h.)"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

_SPATIAL_NAMES = {1: "length", 2: "height, width"}

# Per-axis kernel sizes and dilations.
Window = tuple[tuple[int, ...], tuple[int, ...]]


def per_axis(op: str, name: str, value: int | Sequence[int], rank: int) -> tuple[int, ...]:
    """An int or a sequence of `rank` ints, as a tuple of `rank` ints."""
    if isinstance(value, bool):
        raise ValueError(f"{op}: {name} must be an int or {rank} ints, got {value!r}")
    if isinstance(value, int):
        return (value,) * rank
    values = tuple(value) if isinstance(value, Sequence) else None
    if values is None or len(values) != rank or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{op}: {name} must be an int or a tuple of {rank} ints, got {value!r}")
    return values


def rank_of(op: str, kernel_size: Sequence[int]) -> int:
    """Spatial rank (1 or 2) of an op given its per-axis kernel sizes."""
    if len(kernel_size) not in _SPATIAL_NAMES:
        raise ValueError(
            f"{op}: kernel_size must have one entry per spatial axis (1 or 2), got "
            f"{list(kernel_size)}"
        )
    return len(kernel_size)


def kernel_and_dilation(
    op: str, kernel_size: int | Sequence[int], dilation: int | Sequence[int], rank: int
) -> Window:
    """Validated per-axis kernel sizes (odd, >= 3) and dilations (>= 1)."""
    kernel = per_axis(op, "kernel_size", kernel_size, rank)
    dil = per_axis(op, "dilation", dilation, rank)
    if any(k < 3 or k % 2 == 0 for k in kernel):
        raise ValueError(
            f"{op}: kernel_size must be odd and >= 3 (the window is centred on its query), "
            f"got {kernel_size!r}"
        )
    if any(d < 1 for d in dil):
        raise ValueError(f"{op}: dilation must be >= 1, got {dilation!r}")
    return kernel, dil


def tokens_tensor(op: str, name: str, x: torch.Tensor, rank: int) -> None:
    """`x` is a floating-point (batch, *spatial, heads, dim) tensor."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != rank + 3:
        raise ValueError(
            f"{op}: {name} must have shape (batch, {_SPATIAL_NAMES[rank]}, heads, dim) for a "
            f"{rank}D op, got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{op}: {name} must be a floating-point tensor, got {x.dtype}")


def large_enough(
    op: str, name: str, x: torch.Tensor, kernel: tuple[int, ...], dilation: tuple[int, ...]
) -> None:
    """Every dilation group of every axis holds at least `kernel` tokens (L // d >= k)."""
    spatial = tuple(x.shape[1 : 1 + len(kernel)])
    for axis, (length, k, d) in enumerate(zip(spatial, kernel, dilation)):
        if length // d < k:
            raise ValueError(
                f"{op}: {name} has spatial size {spatial} but kernel_size {kernel} with "
                f"dilation {dilation} needs at least "
                f"{tuple(k * d for k, d in zip(kernel, dilation))}"
                f" (axis {axis}: {length} < {k}*{d}); pad the input, as "
                f"NeighborhoodAttention{len(kernel)}D does"
            )


def same_placement(op: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.device != b.device:
        raise ValueError(
            f"{op}: {name_a} and {name_b} must be on the same device, got {a.device} and {b.device}"
        )
    if a.dtype != b.dtype:
        raise ValueError(
            f"{op}: {name_a} and {name_b} must have the same dtype, got {a.dtype} and {b.dtype}"
        )


def same_shape(
    op: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, *, last_dim: bool = True
) -> None:
    """Same shape (or the same but for the last dim, the head dim of values)."""
    shape_a, shape_b = tuple(a.shape), tuple(b.shape)
    if last_dim and shape_a != shape_b:
        if shape_a[:-1] == shape_b[:-1]:
            raise ValueError(
                f"{op}: {name_a} and {name_b} must have the same head dim, got {shape_a[-1]} "
                f"and {shape_b[-1]} (shapes {shape_a} and {shape_b})"
            )
        raise ValueError(
            f"{op}: {name_a} {shape_a} and {name_b} {shape_b} must have the same shape"
        )
    if not last_dim and shape_a[:-1] != shape_b[:-1]:
        raise ValueError(
            f"{op}: {name_a} {shape_a} and {name_b} {shape_b} must have the same shape except "
            "the last dim"
        )


def rpb_tensor(
    op: str, rpb: torch.Tensor | None, heads: int, kernel: tuple[int, ...], like: torch.Tensor
) -> None:
    """`rpb` is None or (heads, 2*k-1 per axis), on `like`'s device and dtype."""
    if rpb is None:
        return
    expected = (heads, *(2 * k - 1 for k in kernel))
    if not isinstance(rpb, torch.Tensor) or tuple(rpb.shape) != expected:
        got = tuple(rpb.shape) if isinstance(rpb, torch.Tensor) else type(rpb).__name__
        raise ValueError(
            f"{op}: rpb must have shape (heads, 2*kernel_size-1 per axis) = {expected}, got {got}"
        )
    same_placement(op, "rpb", rpb, "query", like)


def attn_tensor(
    op: str,
    attn: torch.Tensor,
    kernel: tuple[int, ...],
    value: torch.Tensor,
    *,
    name: str = "attn",
    like: str = "value",
) -> None:
    """`attn` (or another tensor `name` of its layout) is (batch, *spatial, heads,
    prod(kernel)) matching the tokens tensor `value` (called `like`)."""
    expected = (*value.shape[:-1], math.prod(kernel))
    if not isinstance(attn, torch.Tensor) or tuple(attn.shape) != expected:
        got = tuple(attn.shape) if isinstance(attn, torch.Tensor) else type(attn).__name__
        raise ValueError(
            f"{op}: {name} must have shape (batch, *spatial, heads, prod(kernel_size)) = "
            f"{expected} for {like} of shape {tuple(value.shape)}, got {got}"
        )
    same_placement(op, name, attn, like, value)


def qk_inputs(
    op: str,
    query: torch.Tensor,
    key: torch.Tensor,
    kernel_size: int | Sequence[int],
    dilation: int | Sequence[int],
    rpb: torch.Tensor | None,
    rank: int,
) -> Window:
    """Checks the inputs of a QK op; returns the per-axis kernel sizes and dilations."""
    kernel, dil = kernel_and_dilation(op, kernel_size, dilation, rank)
    tokens_tensor(op, "query", query, rank)
    tokens_tensor(op, "key", key, rank)
    same_placement(op, "query", query, "key", key)
    same_shape(op, "query", query, "key", key)
    large_enough(op, "query", query, kernel, dil)
    rpb_tensor(op, rpb, query.shape[-2], kernel, query)
    return kernel, dil


def av_inputs(
    op: str,
    attn: torch.Tensor,
    value: torch.Tensor,
    kernel_size: int | Sequence[int],
    dilation: int | Sequence[int],
    rank: int,
) -> Window:
    """Checks the inputs of an AV op; returns the per-axis kernel sizes and dilations."""
    kernel, dil = kernel_and_dilation(op, kernel_size, dilation, rank)
    tokens_tensor(op, "value", value, rank)
    large_enough(op, "value", value, kernel, dil)
    attn_tensor(op, attn, kernel, value)
    return kernel, dil


def qkv_inputs(
    op: str,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kernel_size: int | Sequence[int],
    dilation: int | Sequence[int],
    rpb: torch.Tensor | None,
    rank: int,
) -> Window:
    """Checks the inputs of a fused NA op; returns the per-axis kernel sizes and dilations."""
    kernel, dil = qk_inputs(op, query, key, kernel_size, dilation, rpb, rank)
    tokens_tensor(op, "value", value, rank)
    same_placement(op, "query", query, "value", value)
    same_shape(op, "query", query, "value", value, last_dim=False)
    return kernel, dil
