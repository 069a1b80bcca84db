"""Argument checks of multi-scale deformable attention, run by the public function
(dinat_m2f.layers.ms_deform_attn) before any backend, by the pure-PyTorch path and by the
native ops' fake kernels. Every error is a ValueError naming the op, the argument and its
value.

`inputs` reads only shapes, dtypes and devices, so torch.compile traces it without a graph
break; `level_layout` reads the values of spatial_shapes and level_start_index (a device
synchronisation when they live on a GPU). (The native ops, which can be called directly
through torch.ops, also refuse bad input themselves: native/ms_deform_attn/ms_deform_attn_ops.h.)
"""

from __future__ import annotations

import torch

_LAYOUTS = {
    "value": (4, "(batch, len_in, heads, head_dim)"),
    "spatial_shapes": (2, "(levels, 2)"),
    "level_start_index": (1, "(levels,)"),
    "sampling_locations": (6, "(batch, len_q, heads, levels, points, 2)"),
    "attention_weights": (5, "(batch, len_q, heads, levels, points)"),
}
_DIM_NAMES = ("batch entries", "queries", "heads", "levels", "points")


def _same_size(
    op: str, name: str, x: torch.Tensor, dim: int, other: str, y: torch.Tensor, other_dim: int
) -> None:
    if x.shape[dim] != y.shape[other_dim]:
        what = _DIM_NAMES[dim] if name != "level_start_index" else "levels"
        raise ValueError(
            f"{op}: {name} has {x.shape[dim]} {what} (dim {dim}) but {other} has "
            f"{y.shape[other_dim]} (dim {other_dim}); shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )


def inputs(
    op: str,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> None:
    """Ranks, sizes that must agree across the tensors, dtypes and devices."""
    tensors = dict(
        value=value,
        spatial_shapes=spatial_shapes,
        level_start_index=level_start_index,
        sampling_locations=sampling_locations,
        attention_weights=attention_weights,
    )
    for name, x in tensors.items():
        rank, layout = _LAYOUTS[name]
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != rank:
            raise ValueError(f"{op}: {name} must have shape {layout}, got {tuple(x.shape)}")
    if spatial_shapes.shape[1] != 2:
        raise ValueError(
            f"{op}: spatial_shapes must have shape (levels, 2), one (height, width) per level, "
            f"got {tuple(spatial_shapes.shape)}"
        )
    if sampling_locations.shape[-1] != 2:
        raise ValueError(
            f"{op}: sampling_locations must end in a dim of 2 (x, y), got shape "
            f"{tuple(sampling_locations.shape)}"
        )
    if spatial_shapes.shape[0] < 1:
        raise ValueError(f"{op}: spatial_shapes must describe at least one level, got none")
    _same_size(op, "level_start_index", level_start_index, 0, "spatial_shapes", spatial_shapes, 0)
    _same_size(op, "sampling_locations", sampling_locations, 0, "value", value, 0)
    _same_size(op, "sampling_locations", sampling_locations, 2, "value", value, 2)
    _same_size(op, "sampling_locations", sampling_locations, 3, "spatial_shapes", spatial_shapes, 0)
    for dim in range(5):
        _same_size(
            op,
            "attention_weights",
            attention_weights,
            dim,
            "sampling_locations",
            sampling_locations,
            dim,
        )
    if not value.is_floating_point():
        raise ValueError(f"{op}: value must be a floating-point tensor, got {value.dtype}")
    for name in ("sampling_locations", "attention_weights"):
        x = tensors[name]
        if x.dtype != value.dtype:
            raise ValueError(f"{op}: {name} must have value's dtype {value.dtype}, got {x.dtype}")
        if x.device != value.device:
            raise ValueError(
                f"{op}: {name} must be on value's device {value.device}, got {x.device}"
            )
    for name in ("spatial_shapes", "level_start_index"):
        x = tensors[name]
        if x.dtype != torch.int64:
            raise ValueError(f"{op}: {name} must be an int64 tensor, got {x.dtype}")
        if x.device != value.device and x.device.type != "cpu":
            raise ValueError(
                f"{op}: {name} must be on value's device {value.device} or on the CPU, got "
                f"{x.device}"
            )


def level_layout(
    op: str, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor, value: torch.Tensor
) -> list[tuple[int, int]]:
    """The (height, width) of every level, after checking that the levels tile value's length
    axis: sum of height*width == len_in and level_start_index == its exclusive cumsum."""
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    pairs = [list(hw) for hw in shapes]
    if any(h < 1 or w < 1 for h, w in shapes):
        raise ValueError(
            f"{op}: spatial_shapes must hold (height, width) pairs of positive ints, got {pairs}"
        )
    starts, total = [], 0
    for h, w in shapes:
        starts.append(total)
        total += h * w
    len_in = value.shape[1]
    if total != len_in:
        raise ValueError(
            f"{op}: spatial_shapes {pairs} hold {total} tokens (sum of height*width) but value "
            f"has len_in = {len_in} (value shape {tuple(value.shape)})"
        )
    given = [int(s) for s in level_start_index.tolist()]
    if given != starts:
        raise ValueError(
            f"{op}: level_start_index must be the exclusive cumulative sum of height*width over "
            f"spatial_shapes {pairs}, i.e. {starts}, got {given}"
        )
    return shapes
