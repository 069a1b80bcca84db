"""Which implementation computes multi-scale deformable attention: the native kernels when the
extension is built for the tensors' device, else the grid_sample twin (with one warning per
device type). Arguments are assumed checked (checks.inputs)."""

from __future__ import annotations

import torch

from ..library import (
    native_implementation,
    native_ops,
    native_supports,
    note_implementation,
    warn_fallback_once,
)
from .reference import ms_deform_attn_reference


def forward(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """(batch, len_q, heads * head_dim), differentiable (see dinat_m2f.layers.ms_deform_attn)."""
    if native_supports(value.device, "ms_deform_attn"):
        # The op checks the level layout itself, so a compiled graph keeps that check without
        # a host read here.
        note_implementation("ms_deform_attn", native_implementation())
        return native_ops().ms_deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    warn_fallback_once(value.device, "ms_deform_attn")
    note_implementation("ms_deform_attn", "pure-pytorch")
    return ms_deform_attn_reference(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
