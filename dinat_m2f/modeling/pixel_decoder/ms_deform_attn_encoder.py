"""The deformable transformer encoder of Mask2Former's pixel decoder.

Multi-scale deformable self-attention over the flattened tokens of several feature maps (each
token attends to a few sampled points per level around its own position), then an FFN;
post-norm layers. Module names follow Mask2Former's so its checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...layers import MSDeformAttn


class MSDeformAttnEncoderLayer(nn.Module):
    """One encoder layer: deformable self-attention + FFN, each with residual and LayerNorm."""

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.1,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """src, pos: (N, S, C); reference_points: (N, S, n_levels, 2). Returns (N, S, C)."""
        attended = self.self_attn(
            src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask
        )
        src = self.norm1(src + self.dropout1(attended))
        # in place: the hidden layer is (N, S, 1024) and linear1's backward does not need its
        # output; a second buffer cost 9 ms a layer at 640 x 640 on the CPU
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src), inplace=True)))
        return self.norm2(src + self.dropout3(ffn))


def encoder_reference_points(
    spatial_shapes: torch.Tensor | Sequence[tuple[int, int]],
    valid_ratios: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """Normalised centre of every token of every level, seen from every level.

    spatial_shapes: (L, 2) (H, W) per level, a tensor or (height, width) pairs (sizes, which
    torch.export traces, where a tensor's values would be data it cannot read); valid_ratios:
    (N, L, 2) (x, y) share of each map that is not padding. Returns (N, S, L, 2) with
    S = sum(H * W), (x, y) in [0, 1].
    """
    if isinstance(spatial_shapes, torch.Tensor):
        spatial_shapes = spatial_shapes.tolist()
    per_level = []
    for level, (height, width) in enumerate(spatial_shapes):
        # arange + 0.5 equals linspace(0.5, n - 0.5, n) exactly; torch.export keeps its length
        # symbolic where linspace's step count pins it to the traced size
        ys, xs = torch.meshgrid(
            torch.arange(height, dtype=torch.float32, device=device) + 0.5,
            torch.arange(width, dtype=torch.float32, device=device) + 0.5,
            indexing="ij",
        )
        ys = ys.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * height)
        xs = xs.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * width)
        per_level.append(torch.stack((xs, ys), -1))
    reference_points = torch.cat(per_level, 1)
    return reference_points[:, :, None] * valid_ratios[:, None]


class MSDeformAttnTransformerEncoder(nn.Module):
    """A stack of `MSDeformAttnEncoderLayer` (checkpoint names `layers.{i}.*`)."""

    def __init__(self, layers: list[MSDeformAttnEncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(
        self,
        src,
        spatial_shapes,
        level_start_index,
        valid_ratios,
        pos,
        padding_mask,
        level_shapes: Sequence[tuple[int, int]] | None = None,
    ):
        """level_shapes: spatial_shapes as (height, width) pairs, when the caller has them
        (spares a host read, and lets torch.export trace the reference points)."""
        reference_points = encoder_reference_points(
            spatial_shapes if level_shapes is None else level_shapes, valid_ratios, src.device
        )
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return src


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Flattens the levels, adds level embeddings to the position embeddings, runs the encoder.

    Args:
        d_model: token width; nhead / num_encoder_layers / dim_feedforward / dropout: encoder;
        num_feature_levels: number of input maps; enc_n_points: sampled points per level.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.encoder = MSDeformAttnTransformerEncoder(
            [
                MSDeformAttnEncoderLayer(
                    d_model, dim_feedforward, dropout, num_feature_levels, nhead, enc_n_points
                )
                for _ in range(num_encoder_layers)
            ]
        )
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(
        self, srcs: list[torch.Tensor], pos_embeds: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """srcs, pos_embeds: per level (N, C, H_l, W_l). Returns the encoded tokens (N, S, C),
        spatial shapes (L, 2) and level start indices (L,), the last two on the CPU."""
        tokens, positions, shapes = [], [], []
        for level, (src, pos) in enumerate(zip(srcs, pos_embeds)):
            shapes.append(src.shape[-2:])
            tokens.append(src.flatten(2).transpose(1, 2))
            positions.append(
                pos.flatten(2).transpose(1, 2) + self.level_embed[level].view(1, 1, -1)
            )
        src_flatten = torch.cat(tokens, 1)
        pos_flatten = torch.cat(positions, 1)
        # Host tensors: the op and the reference points read the level layout on the host,
        # so device copies would cost a GPU synchronisation in every encoder layer. Built by
        # arithmetic on the sizes: torch.export traces them as symbols, which a tensor made
        # from them as data (torch.as_tensor) would pin to the traced values.
        one = torch.ones((), dtype=torch.long)
        spatial_shapes = torch.stack([torch.stack((one * h, one * w)) for h, w in shapes])
        level_start_index = torch.cat(
            (spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1])
        )
        # batched maps here are never padded per image: all of every map is valid
        valid_ratios = src_flatten.new_ones((src_flatten.shape[0], len(srcs), 2))
        memory = self.encoder(
            src_flatten,
            spatial_shapes,
            level_start_index,
            valid_ratios,
            pos_flatten,
            None,
            level_shapes=[tuple(shape) for shape in shapes],
        )
        return memory, spatial_shapes, level_start_index
