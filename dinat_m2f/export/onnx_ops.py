"""ONNX forms of the native ops, built from standard ONNX operators (opset 18), for
`torch.onnx.export(..., custom_translation_table=TRANSLATIONS)`.

Each function receives the op's tensors as ONNX values and its int lists as Python lists, and
records ONNX nodes (onnxscript's trace mode), so any ONNX runtime can run the file and no
custom operator library is needed. Window tables are computed in the graph from the inputs'
shapes, so height and width stay dynamic. The semantics are exactly the native ops' (NATTEN's,
docs/na_ops.md):

- `dinat_m2f::na_qk` / `na_av` (2D): token i of an axis is in dilation group g = i mod d at
  in-group position p = i div d; its window starts at clamp(p - k//2, 0, group_len - k) in
  group coordinates and its neighbours are g + (start + j) * d; the relative-position-bias
  index of neighbour j is start + j - p + k - 1. The 2D window is the product of the two axes'
  windows, neighbours row-major. Computed one window row at a time (gather the row's key rows,
  then the kw columns), so the peak memory is kw times the input, not kh * kw times.
- `dinat_m2f::ms_deform_attn`: per level, the level's value map sampled with GridSample
  (bilinear, zero padding, align_corners=0) at 2 * location - 1, weighted and summed over
  levels and points.
- `dinat_m2f_export::batched_nms` (nms.py, the exported detectors' class-wise NMS):
  NonMaxSuppression with one score row per class (-inf outside the box's class, dropped by
  the score threshold), the kept boxes then sorted by decreasing score.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from onnxscript.onnx_opset import opset18 as op

from . import nms  # noqa: F401  (registers dinat_m2f_export::batched_nms)

OPSET = 18
_INT64_MAX = 2**63 - 1
_LOWEST_FLOAT32 = -3.4028234663852886e38


def _scalar(value: int):
    return op.Constant(value_ints=[value])


def _axis_windows(length, kernel: int, dilation: int):
    """(length, kernel) neighbour indices and (length, kernel) bias indices of one axis, from
    its length (a 1-element int64 value)."""
    length = op.Squeeze(length)
    index = op.Range(op.Constant(value_int=0), length, op.Constant(value_int=1))
    d = op.Constant(value_int=dilation)
    group = op.Mod(index, d)
    pos = op.Div(index, d)
    # ceil((length - group) / d)
    group_len = op.Div(op.Sub(op.Add(length, op.Constant(value_int=dilation - 1)), group), d)
    half = op.Constant(value_int=kernel // 2)
    k = op.Constant(value_int=kernel)
    start = op.Min(op.Max(op.Sub(pos, half), op.Constant(value_int=0)), op.Sub(group_len, k))
    offsets = op.Constant(value_ints=list(range(kernel)))  # (kernel,)
    window = op.Add(op.Unsqueeze(start, [1]), offsets)  # (length, kernel), group coordinates
    neighbours = op.Add(op.Unsqueeze(group, [1]), op.Mul(window, d))
    bias = op.Add(op.Sub(window, op.Unsqueeze(pos, [1])), op.Constant(value_int=kernel - 1))
    return neighbours, bias


def _check_2d(name: str, kernel_size, dilation) -> tuple[list[int], list[int]]:
    kernel, dil = list(kernel_size), list(dilation)
    if len(kernel) != 2 or len(dil) != 2:
        raise ValueError(
            f"dinat_m2f::{name}: the ONNX form covers 2D neighbourhood attention only, got "
            f"kernel_size={kernel}, dilation={dil}"
        )
    return kernel, dil


def _heads_first(x):
    """(B, H, W, heads, C) -> (B, heads, H, W, C)."""
    return op.Transpose(x, perm=[0, 3, 1, 2, 4])


def _windows_2d(x, kernel: list[int], dilation: list[int]):
    shape = op.Shape(x)
    rows, row_bias = _axis_windows(op.Slice(shape, [1], [2]), kernel[0], dilation[0])
    cols, col_bias = _axis_windows(op.Slice(shape, [2], [3]), kernel[1], dilation[1])
    return rows, row_bias, cols, col_bias


def _row(table, a: int):
    """Column a of a (length, kernel) table: (length,)."""
    return op.Squeeze(op.Slice(table, [a], [a + 1], [1]), [1])


def na_qk_onnx(query, key, rpb, kernel_size, dilation):
    """Logits (B, H, W, heads, kh * kw) = <query, neighbour key> (+ rpb)."""
    kernel, dil = _check_2d("na_qk", kernel_size, dilation)
    rows, row_bias, cols, col_bias = _windows_2d(query, kernel, dil)
    q = op.Unsqueeze(_heads_first(query), [-1])  # (B, h, H, W, D, 1)
    k = _heads_first(key)  # (B, h, H, W, D)
    logits = []
    for a in range(kernel[0]):
        key_rows = op.Gather(k, _row(rows, a), axis=2)  # (B, h, H, W, D): row a of each window
        window_keys = op.Gather(key_rows, cols, axis=3)  # (B, h, H, W, kw, D)
        row_logits = op.Squeeze(op.MatMul(window_keys, q), [-1])  # (B, h, H, W, kw)
        if rpb is not None:
            bias = op.Gather(rpb, _row(row_bias, a), axis=1)  # (h, H, 2kw - 1)
            row_logits = op.Add(row_logits, op.Gather(bias, col_bias, axis=2))  # (h, H, W, kw)
        logits.append(row_logits)
    return op.Transpose(op.Concat(*logits, axis=-1), perm=[0, 2, 3, 1, 4])


def na_av_onnx(attn, value, kernel_size, dilation):
    """Output (B, H, W, heads, D) = sum over the window of attn * neighbour value."""
    kernel, dil = _check_2d("na_av", kernel_size, dilation)
    rows, _, cols, _ = _windows_2d(value, kernel, dil)
    v = _heads_first(value)  # (B, h, H, W, D)
    weights = _heads_first(attn)  # (B, h, H, W, kh * kw)
    out = None
    for a in range(kernel[0]):
        value_rows = op.Gather(v, _row(rows, a), axis=2)
        window_values = op.Gather(value_rows, cols, axis=3)  # (B, h, H, W, kw, D)
        row_weights = op.Slice(weights, [a * kernel[1]], [(a + 1) * kernel[1]], [4])
        row_out = op.MatMul(op.Unsqueeze(row_weights, [4]), window_values)  # (B, h, H, W, 1, D)
        out = row_out if out is None else op.Add(out, row_out)
    return op.Transpose(op.Squeeze(out, [4]), perm=[0, 2, 3, 1, 4])


def ms_deform_attn_onnx(value, spatial_shapes, level_start_index, locations, weights):
    """(B, Q, heads * D): sum over levels and points of weight * bilinear sample of the level's
    value map (GridSample, align_corners=0, zero padding) at the normalised location."""
    shape = op.Shape(value)  # (B, S, heads, D)
    batch, heads, dim = (op.Slice(shape, [i], [i + 1]) for i in (0, 2, 3))
    loc_shape = op.Shape(locations)  # (B, Q, heads, L, P, 2)
    queries, points = op.Slice(loc_shape, [1], [2]), op.Slice(loc_shape, [4], [5])
    levels = locations.shape[3] if locations.shape is not None else None
    if not isinstance(levels, int):
        raise ValueError(
            "dinat_m2f::ms_deform_attn: the ONNX form needs a static number of levels "
            f"(sampling_locations' dim 3), got {levels!r}"
        )
    batch_heads = op.Mul(batch, heads)
    # (B, Q, h, L, P, 2) -> (B, h, Q, L, P, 2) -> (B*h, Q, L, P, 2), in [-1, 1]
    grids = op.Sub(op.Mul(locations, op.CastLike(2.0, locations)), op.CastLike(1.0, locations))
    grids = op.Transpose(grids, perm=[0, 2, 1, 3, 4, 5])
    grids = op.Reshape(
        grids, op.Concat(batch_heads, queries, _scalar(levels), points, _scalar(2), axis=0)
    )
    maps = op.Transpose(value, perm=[0, 2, 3, 1])  # (B, h, D, S)
    samples = []
    for level in range(levels):
        height = op.Slice(spatial_shapes, [level, 0], [level + 1, 1], [0, 1])  # (1, 1)
        width = op.Slice(spatial_shapes, [level, 1], [level + 1, 2], [0, 1])
        height, width = op.Reshape(height, [1]), op.Reshape(width, [1])
        start = op.Slice(level_start_index, [level], [level + 1])
        level_map = op.Slice(maps, start, op.Add(start, op.Mul(height, width)), [3])
        level_map = op.Reshape(level_map, op.Concat(batch_heads, dim, height, width, axis=0))
        level_grid = op.Squeeze(op.Slice(grids, [level], [level + 1], [2]), [2])  # (B*h,Q,P,2)
        samples.append(
            op.GridSample(
                level_map, level_grid, align_corners=0, mode="bilinear", padding_mode="zeros"
            )
        )  # (B*h, D, Q, P)
    stacked = op.Concat(*samples, axis=3)  # (B*h, D, Q, L*P)
    flat_weights = op.Transpose(weights, perm=[0, 2, 1, 3, 4])  # (B, h, Q, L, P)
    flat_weights = op.Reshape(
        flat_weights, op.Concat(batch_heads, _scalar(1), queries, _scalar(-1), axis=0)
    )
    out = op.ReduceSum(op.Mul(stacked, flat_weights), [3], keepdims=0)  # (B*h, D, Q)
    out = op.Reshape(out, op.Concat(batch, op.Mul(heads, dim), queries, axis=0))
    return op.Transpose(out, perm=[0, 2, 1])


def batched_nms_onnx(boxes, scores, classes, num_classes: int, iou_threshold: float):
    """Indices (K,) int64 kept by class-wise NMS, by decreasing score (nms.batched_nms)."""
    labels = op.Range(op.Constant(value_int=0), op.Constant(value_int=num_classes), 1)
    member = op.Equal(op.Unsqueeze(labels, [1]), op.Unsqueeze(classes, [0]))  # (C, N)
    absent = op.CastLike(op.Constant(value_float=float("-inf")), scores)
    rows = op.Where(member, op.Unsqueeze(scores, [0]), absent)  # (C, N)
    selected = op.NonMaxSuppression(
        op.Unsqueeze(boxes, [0]),  # (1, N, 4)
        op.Unsqueeze(rows, [0]),  # (1, C, N)
        op.Constant(value_ints=[_INT64_MAX]),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[_LOWEST_FLOAT32]),  # keeps every finite score
    )  # (K, 3): batch, class, box; class by class
    index = op.Squeeze(op.Slice(selected, [2], [3], [1]), [1])
    _, order = op.TopK(op.Gather(scores, index), op.Shape(index), axis=0, largest=1, sorted=1)
    return op.Gather(index, order)


def translations() -> dict[Callable, Callable]:
    """The custom translation table: native op overload -> its ONNX form."""
    ops = torch.ops.dinat_m2f
    return {
        ops.na_qk.default: na_qk_onnx,
        ops.na_av.default: na_av_onnx,
        ops.ms_deform_attn.default: ms_deform_attn_onnx,
        torch.ops.dinat_m2f_export.batched_nms.default: batched_nms_onnx,
    }


__all__ = [
    "OPSET",
    "batched_nms_onnx",
    "ms_deform_attn_onnx",
    "na_av_onnx",
    "na_qk_onnx",
    "translations",
]
