"""Multi-scale deformable attention (Deformable DETR's MSDeformAttn) as a function with checks,
`ms_deform_attn`, and as the module `MSDeformAttn` that Mask2Former's pixel decoder uses
(parameter names match Mask2Former's, so its checkpoints load unchanged).

The function runs the native kernels (torch.ops.dinat_m2f.ms_deform_attn) when the extension
is built for the tensors' device, otherwise the grid_sample twin (dinat_m2f.ops). Semantics:
docs/ms_deform_attn.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.ms_deform_attn import checks, dispatch


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
    checks.inputs(
        "ms_deform_attn",
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
    )
    return dispatch.forward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: every query attends to `n_points` learned locations
    around its reference point on each of `n_levels` feature maps, per head.

    Args:
        d_model: channels of the queries, the flattened input and the output.
        n_levels: feature levels sampled.
        n_heads: attention heads; must divide `d_model`.
        n_points: sampling points per head and level.

    Parameters (Mask2Former's names): `sampling_offsets` (d_model -> heads*levels*points*2),
    `attention_weights` (d_model -> heads*levels*points), `value_proj` and `output_proj`
    (d_model -> d_model), all nn.Linear. Initialised like Deformable DETR: zero offset
    weights and a bias that points head h in direction 2*pi*h/heads, point p at distance p+1;
    uniform attention (zero weight and bias); Xavier-uniform projections with zero bias.
    """

    def __init__(
        self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4
    ) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (
            ("d_model", d_model),
            ("n_levels", n_levels),
            ("n_heads", n_heads),
            ("n_points", n_points),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {arg} must be an int >= 1, got {value!r}")
        if d_model % n_heads != 0:
            raise ValueError(
                f"{name}: d_model must be divisible by n_heads, got d_model={d_model}, "
                f"n_heads={n_heads}"
            )
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.head_dim = d_model // n_heads
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation (see the class docstring)."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (heads, 2) as (x, y)
        # scale each direction so its larger component is 1: a step of one pixel on the
        # 8-neighbourhood's square
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        distance = torch.arange(1, self.n_points + 1, dtype=torch.float32)
        grid = directions[:, None, None, :] * distance[None, None, :, None]  # (heads, 1, P, 2)
        grid = grid.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for linear in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def _check(self, query, reference_points, input_flatten, input_spatial_shapes) -> None:
        name = type(self).__name__
        for arg, x in (("query", query), ("input_flatten", input_flatten)):
            if x.dim() != 3 or x.shape[-1] != self.d_model:
                raise ValueError(
                    f"{name}: {arg} must have shape (batch, length, d_model={self.d_model}), "
                    f"got {tuple(x.shape)}"
                )
        expected = (query.shape[0], query.shape[1], self.n_levels)
        if (
            reference_points.dim() != 4
            or tuple(reference_points.shape[:3]) != expected
            or reference_points.shape[-1] not in (2, 4)
        ):
            raise ValueError(
                f"{name}: reference_points must have shape (batch, len_q, n_levels, 2) or "
                f"(..., 4) = ({', '.join(map(str, expected))}, 2 or 4) for query of shape "
                f"{tuple(query.shape)}, got {tuple(reference_points.shape)}"
            )
        if tuple(input_spatial_shapes.shape) != (self.n_levels, 2):
            raise ValueError(
                f"{name}: input_spatial_shapes must have shape (n_levels={self.n_levels}, 2), "
                f"got {tuple(input_spatial_shapes.shape)}"
            )

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attends from each query to sampled locations of the flattened feature pyramid.

        Args:
            query: (batch, len_q, d_model).
            reference_points: (batch, len_q, n_levels, 2) normalised (x, y) in [0, 1], the
                top-left of the map at (0, 0); or (batch, len_q, n_levels, 4) boxes
                (cx, cy, w, h), around which the offsets scale with the box size.
            input_flatten: (batch, len_in, d_model), every level's map flattened row-major
                and concatenated.
            input_spatial_shapes: (n_levels, 2) int64, (H_l, W_l) per level; on the CPU
                (which spares a device synchronisation per call) or on query's device.
            input_level_start_index: (n_levels,) int64, exclusive cumsum of H_l * W_l; on the
                CPU or on query's device.
            input_padding_mask: (batch, len_in) bool, True at padding tokens (their values
                are zeroed), or None.

        Returns:
            (batch, len_q, d_model).
        """
        self._check(query, reference_points, input_flatten, input_spatial_shapes)
        batch, len_q, _ = query.shape
        len_in = input_flatten.shape[1]
        heads, levels, points = self.n_heads, self.n_levels, self.n_points

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(batch, len_in, heads, self.head_dim)

        rows = batch * len_q
        offsets = self.sampling_offsets(query).view(rows, heads, levels * points * 2)
        weights = self.attention_weights(query).view(batch, len_q, heads, levels * points)
        weights = F.softmax(weights, dim=-1).view(batch, len_q, heads, levels, points)

        # the location arithmetic runs on (batch * len_q, heads, levels * points * 2) rows,
        # with the per-level factors spread over the points beforehand: the same elementwise
        # operations as Deformable DETR's 6-d broadcasts (so the same bits), which torch runs
        # 10x slower because their innermost dimension is 2 long
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalise by (W_l, H_l)
            # (levels, 2) as (W, H); the shapes may live on the host (see the function's
            # docstring): copy them without waiting for the device
            normalizer = input_spatial_shapes.flip(-1).to(
                offsets.device, offsets.dtype, non_blocking=True
            )
            normalizer = normalizer[:, None, :].expand(levels, points, 2).reshape(-1)
            locations = self._per_point(reference_points) + offsets / normalizer
        else:
            # offsets are in units of half the box size divided by the number of points
            centers = self._per_point(reference_points[..., :2])
            sizes = self._per_point(reference_points[..., 2:])
            locations = centers + offsets / points * sizes * 0.5
        locations = locations.view(batch, len_q, heads, levels, points, 2)
        # under autocast the projections give float16/bfloat16 while reference points stay
        # float32: the op takes one dtype
        out = ms_deform_attn(
            value,
            input_spatial_shapes,
            input_level_start_index,
            locations.to(value.dtype),
            weights.to(value.dtype),
        )
        return self.output_proj(out)

    def _per_point(self, xy: torch.Tensor) -> torch.Tensor:
        """(batch, len_q, levels, 2) -> (batch * len_q, 1, levels * points * 2): each level's
        pair repeated for its points, to broadcast over the heads."""
        rows = xy.shape[0] * xy.shape[1]
        xy = xy.reshape(rows, self.n_levels, 1, 2)
        return xy.expand(rows, self.n_levels, self.n_points, 2).reshape(rows, 1, -1)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, "
            f"n_points={self.n_points}"
        )
