"""Pure-PyTorch multi-scale deformable attention with `F.grid_sample`: the fallback when the
native extension is not built for the tensors' device, and the oracle the native kernels are
tested against.

Each level is sampled with one grid_sample call over (batch * heads) maps, so it materialises
every sample, (batch * heads, head_dim, len_q, levels * points), before the weighted sum;
autograd comes from PyTorch. float16 / bfloat16 inputs are computed in float32 and the result
cast back, like the native kernels' fp32 accumulation. Inputs are assumed checked
(checks.inputs); the level layout is checked here because it is read here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import level_layout


def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """(batch, len_q, heads * head_dim): sum over levels and points of attention weight times
    the bilinear sample (grid_sample, align_corners=False, zero padding) of the level's value
    map at the normalised (x, y) location.

    value (batch, len_in, heads, head_dim); spatial_shapes (levels, 2) int64 (height, width);
    level_start_index (levels,) int64; sampling_locations (batch, len_q, heads, levels,
    points, 2); attention_weights (batch, len_q, heads, levels, points).
    """
    shapes = level_layout("ms_deform_attn", spatial_shapes, level_start_index, value)
    dtype = value.dtype
    if dtype in (torch.float16, torch.bfloat16):
        value, sampling_locations, attention_weights = (
            x.float() for x in (value, sampling_locations, attention_weights)
        )
    batch, _, heads, dim = value.shape
    len_q, levels, points = sampling_locations.shape[1], len(shapes), sampling_locations.shape[4]
    # grid_sample takes locations in [-1, 1]: x = -1 is the left edge of the leftmost pixel
    grids = (2 * sampling_locations - 1).transpose(1, 2).flatten(0, 1)  # (B*h, q, L, P, 2)
    samples = []
    start = 0
    for level, (height, width) in enumerate(shapes):
        # (B, H*W, h, D) -> (B*h, D, H, W)
        maps = value[:, start : start + height * width].permute(0, 2, 3, 1)
        maps = maps.reshape(batch * heads, dim, height, width)
        samples.append(
            F.grid_sample(
                maps,
                grids[:, :, level],
                mode="bilinear",
                padding_mode="zeros",
                align_corners=False,
            )
        )  # (B*h, D, q, P)
        start += height * width
    stacked = torch.stack(samples, dim=3).flatten(3)  # (B*h, D, q, L*P)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, len_q, levels * points)
    out = (stacked * weights).sum(-1)  # (B*h, D, q)
    out = out.reshape(batch, heads * dim, len_q).transpose(1, 2)
    return out.to(dtype).contiguous()
