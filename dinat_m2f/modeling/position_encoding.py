"""Fixed sine/cosine position embedding of a 2D feature map (the DETR formulation).

Both Mask2Former heads use it; it has no parameters, but its exact formula matters for the
numbers of released checkpoints, so the pixel decoder and the transformer decoder share this one.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Sine embedding of (row, column) positions, `2 * num_pos_feats` channels.

    Args:
        num_pos_feats: channels per axis (half the output channels).
        temperature: base of the geometric progression of frequencies.
        normalize: scale positions to (0, scale] by the map's extent before embedding.
        scale: the extent positions are normalised to (default 2*pi).
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000.0,
        normalize: bool = False,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError(f"PositionEmbeddingSine: scale={scale} needs normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W) (only its shape and device are used); mask: (B, H, W) bool, True
        at padding. Returns (B, 2 * num_pos_feats, H, W) float32."""
        if mask is None:
            mask = torch.zeros((x.size(0), x.size(2), x.size(3)), device=x.device, dtype=torch.bool)
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        steps = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        frequencies = self.temperature ** (
            2 * torch.div(steps, 2, rounding_mode="floor") / self.num_pos_feats
        )
        pos_x = x_embed[:, :, :, None] / frequencies
        pos_y = y_embed[:, :, :, None] / frequencies
        # even channels sine, odd channels cosine, interleaved
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale:.4f}"
        )
