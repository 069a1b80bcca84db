"""Multi-scale deformable attention (Deformable DETR's MSDeformAttn core) as a function.

The native kernels (torch.ops.dinat_m2f.ms_deform_attn) run when the extension is built for
the tensors' device; otherwise the grid_sample implementation in ms_deform_attn_reference
does, with one warning per device type. Semantics: docs/ms_deform_attn.md.
"""

from __future__ import annotations

import torch

from .._native import native_supports, warn_fallback_once
from . import (
    ms_deform_attn_checks,
    ms_deform_attn_native,  # noqa: F401  (registers the fake kernels and autograd)
)
from .ms_deform_attn_reference import ms_deform_attn_reference

_FAMILY = "ms_deform_attn"


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention: weighted bilinear samples of a feature pyramid.

    out[b, q, h] = sum over levels l and points p of attention_weights[b, q, h, l, p] times
    the level-l value map of head h sampled at sampling_locations[b, q, h, l, p] like
    grid_sample(align_corners=False, padding_mode="zeros"): pixel coordinates
    (x * W_l - 0.5, y * H_l - 0.5), pixels outside the map read as zero.

    Args:
        value: (batch, len_in, heads, head_dim), every level's flattened (row-major) map
            concatenated along len_in.
        spatial_shapes: (levels, 2) int64, the (H_l, W_l) of each level.
        level_start_index: (levels,) int64, where each level starts in len_in: the
            exclusive cumulative sum of H_l * W_l (whose total must be len_in).
        sampling_locations: (batch, len_q, heads, levels, points, 2), normalised (x, y);
            locations outside [0, 1] are allowed (their out-of-map pixels read as zero).
        attention_weights: (batch, len_q, heads, levels, points).

    Returns:
        (batch, len_q, heads * head_dim), value's dtype. Differentiable with respect to
        value, sampling_locations and attention_weights.

    value, sampling_locations and attention_weights share one floating dtype and device;
    spatial_shapes and level_start_index may be on the CPU (which spares a GPU sync: their
    values are read on the host). Bad input raises ValueError naming the argument and values.
    """
    op = "ms_deform_attn"
    ms_deform_attn_checks.inputs(
        op, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    if native_supports(value.device, _FAMILY):
        # The op checks the level layout itself, so the compiled graph keeps that check
        # without a host read here.
        return torch.ops.dinat_m2f.ms_deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    warn_fallback_once(value.device, _FAMILY)
    return ms_deform_attn_reference(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
