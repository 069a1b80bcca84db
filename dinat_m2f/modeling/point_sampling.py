"""Sampling mask logits at points: the mask losses and the matcher compare masks on a few
thousand points instead of every pixel (Mask2Former's memory saving, from PointRend)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def point_sample(
    input: torch.Tensor, point_coords: torch.Tensor, **grid_sample_kwargs
) -> torch.Tensor:
    """Bilinear samples of `input` (N, C, H, W) at `point_coords` (N, P, 2) or (N, Hp, Wp, 2),
    (x, y) in [0, 1] over the whole map. Returns (N, C, P) or (N, C, Hp, Wp)."""
    flat = point_coords.dim() == 3
    grid = 2.0 * point_coords - 1.0  # grid_sample wants [-1, 1]
    if flat:
        grid = grid.unsqueeze(2)
    output = F.grid_sample(input, grid, **grid_sample_kwargs)
    return output.squeeze(3) if flat else output


def mask_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of binary mask logits (N, 1, ...): highest (0) where the logit is 0."""
    if logits.shape[1] != 1:
        raise ValueError(
            f"mask_uncertainty: logits must have 1 channel, got shape {tuple(logits.shape)}"
        )
    return -torch.abs(logits)


def uncertain_point_coords_with_randomness(
    coarse_logits: torch.Tensor,
    uncertainty_func: Callable[[torch.Tensor], torch.Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Points where the masks are uncertain, plus uniform ones.

    Draws num_points * oversample_ratio uniform points, keeps the importance_sample_ratio share
    of num_points that are most uncertain, and fills the rest uniformly at random (from
    `generator`, default torch's global one).
    coarse_logits: (N, 1, H, W). Returns (N, num_points, 2), (x, y) in [0, 1].
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}"
        )
    num_masks = coarse_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(
        num_masks, num_sampled, 2, device=coarse_logits.device, generator=generator
    )
    uncertainties = uncertainty_func(point_sample(coarse_logits, candidates, align_corners=False))
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    top = torch.topk(uncertainties[:, 0, :], k=num_uncertain, dim=1)[1]
    chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        uniform = torch.rand(
            num_masks, num_random, 2, device=coarse_logits.device, generator=generator
        )
        chosen = torch.cat((chosen, uniform), dim=1)
    return chosen
