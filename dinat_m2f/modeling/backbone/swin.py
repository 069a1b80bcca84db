"""Swin Transformer (Liu et al., 2021) as Mask2Former configures it: `D2SwinTransformer`,
registered in detectron2's BACKBONE_REGISTRY and configured by MODEL.SWIN (keys and defaults
of Mask2Former's `add_maskformer2_config`).

Module and parameter names are those of the Swin release and of Mask2Former's backbone
(`patch_embed.{proj,norm}`, `absolute_pos_embed`, `layers.{i}.blocks.{j}.{norm1,attn,norm2,mlp}`
with `attn.{qkv,proj,relative_position_bias_table,relative_position_index}`,
`layers.{i}.downsample.{norm,reduction}`, `norm{i}`), so Mask2Former's Swin checkpoints load
with no missing or unexpected key, and the Swin release's ImageNet checkpoints load their
backbone part (their classifier `norm` / `head` and per-block `attn_mask` buffers are extra).

Any input size: the input is padded at the bottom/right to a multiple of the patch size, odd
maps before patch merging, and each map to a multiple of the window inside the attention
(cropped back after it), as in Mask2Former.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from torch import nn

from ...layers import DropPath
from .adapter import FEATURE_NAMES, Detectron2Backbone, out_indices_of
from .blocks import (
    Mlp,
    PatchEmbed,
    PatchMerging,
    add_output_norms,
    drop_path_rates,
    init_weights,
    level_outputs,
    level_widths,
    run_blocks,
)

# attention logit added between tokens of different regions of a shifted window (Swin's value)
SHIFTED_WINDOW_MASK_VALUE = -100.0


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window²) index into a ((2*window-1)², heads) bias table: for tokens i, j of a
    window (row-major), (dy + window-1) * (2*window-1) + (dx + window-1) with (dy, dx) =
    position of i - position of j."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window - 1
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of window -> (B * H/w * W/w, w*w, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B * h/w * w/w, w*w, C) -> (B, h, w, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int, device) -> torch.Tensor:
    """(num_windows, w*w, w*w) additive mask of a map of (padded) size h x w whose windows are
    cyclically shifted by `shift`: 0 between tokens of the same region, -100 otherwise."""
    regions = torch.zeros(h, w, device=device)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in bounds:
        for cols in bounds:
            regions[rows, cols] = label
            label += 1
    ids = window_partition(regions[None, :, :, None], window).squeeze(-1)  # (nW, w*w)
    differ = ids[:, None, :] != ids[:, :, None]
    return torch.zeros_like(differ, dtype=torch.float32).masked_fill(
        differ, SHIFTED_WINDOW_MASK_VALUE
    )


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window with a learned relative position bias.

    Args:
        dim: channels; num_heads: heads (dim divisible by it); window_size: window side.
        qkv_bias, qk_scale: qkv projection bias, logit scale (None: head_dim ** -0.5).
        attn_drop, proj_drop: dropout on the attention weights and after the projection.
    """

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        # saved in checkpoints, as in the Swin release
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * num_windows, N = w*w, C); mask: (num_windows, N, N) additive or None.
        Returns (B * num_windows, N, C)."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1)  # (heads, N, N)
        if mask is None:
            attn_mask = bias[None].to(q.dtype)
        else:
            windows = mask.shape[0]
            attn_mask = (bias[None, None] + mask[None, :, None]).to(q.dtype)
            attn_mask = attn_mask.expand(bw // windows, -1, -1, -1, -1).reshape(bw, -1, n, n)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            scale=self.scale,
            dropout_p=self.attn_drop if self.training else 0.0,
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(bw, n, c)))


class SwinTransformerBlock(nn.Module):
    """Pre-norm block: x + DropPath(W-MSA or SW-MSA(LN(x))), then x + DropPath(MLP(LN(x)));
    channels-last (B, H, W, C) in and out."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in 0..{window_size - 1}, got {shift_size}")
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop
        )
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H, W, C); mask: the level's shifted-window mask (used when shifting)."""
        b, h, w, c = x.shape
        window, shift = self.window_size, self.shift_size
        y = self.norm1(x)
        pad_b, pad_r = (-h) % window, (-w) % window
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))  # zeros after the norm, as in Swin
        hp, wp = h + pad_b, w + pad_r
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        y = self.attn(window_partition(y, window), mask if shift else None)
        y = window_reverse(y, window, hp, wp)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        y = y[:, :h, :w]
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinLevel(nn.Module):
    """The blocks of one level (shift 0 and window // 2 alternating) and the patch merging that
    ends it (absent on the last level)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        drop_path: Sequence[float],
        downsample: bool,
        use_checkpoint: bool = False,
        **block_kwargs,
    ) -> None:
        super().__init__()
        self.window_size, self.shift_size = window_size, window_size // 2
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                num_heads,
                window_size,
                0 if j % 2 == 0 else window_size // 2,
                drop_path=drop_path[j],
                **block_kwargs,
            )
            for j in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, W, C) -> (level output, input of the next level)."""
        window = self.window_size
        hp, wp = -(-x.shape[1] // window) * window, -(-x.shape[2] // window) * window
        mask = None
        if self.shift_size:
            mask = shifted_window_mask(hp, wp, window, self.shift_size, x.device)
        x = run_blocks(
            self.blocks, x, mask, use_checkpoint=self.use_checkpoint, training=self.training
        )
        return x, (self.downsample(x) if self.downsample is not None else x)


class SwinTransformer(nn.Module):
    """Swin backbone. Input (B, in_chans, H, W), any size.

    Args:
        pretrain_img_size: image side of the absolute position embedding (APE only).
        patch_size, in_chans, embed_dim: the patch embedding; level i has embed_dim * 2**i.
        depths, num_heads: blocks and heads per level; window_size: attention window side.
        mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate: block settings.
        drop_path_rate: stochastic depth, growing linearly over all blocks to this rate.
        ape: absolute position embedding; patch_norm: LayerNorm after the patch embedding.
        out_indices: levels whose LayerNorm'd (`norm{i}`), channels-first outputs
            `forward_features` returns.
        use_checkpoint: recompute each block in backward (activation checkpointing).
    """

    def __init__(
        self,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        ape: bool = False,
        patch_norm: bool = True,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.widths = level_widths(embed_dim, depths, num_heads, out_indices)
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.num_levels = len(depths)
        for i, (width, heads) in enumerate(zip(self.widths, num_heads)):
            if width % heads:
                raise ValueError(f"level {i}: width {width} is not divisible by {heads} heads")
        self.out_indices = tuple(out_indices)
        self.ape = ape
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size, patch_norm)
        if ape:
            side = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, side, side))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = drop_path_rates(drop_path_rate, depths)
        self.layers = nn.ModuleList(
            SwinLevel(
                self.widths[i],
                depth,
                num_heads[i],
                window_size,
                drop_path=rates[i],
                downsample=i < self.num_levels - 1,
                use_checkpoint=use_checkpoint,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
            )
            for i, depth in enumerate(depths)
        )
        add_output_norms(self, self.widths, self.out_indices)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """(B, C_in, H, W) -> {level i: (B, C_i, ~H/(patch * 2**i), ~W/(patch * 2**i))}."""
        x = self.patch_embed(x)
        if self.ape:
            pos = F.interpolate(self.absolute_pos_embed, size=x.shape[1:3], mode="bicubic")
            x = x + pos.permute(0, 2, 3, 1)
        return level_outputs(self, self.layers, self.pos_drop(x))


@BACKBONE_REGISTRY.register()
class D2SwinTransformer(Detectron2Backbone, SwinTransformer):
    """Returns {"res2".."res5": (B, C_i, ~H/stride, ~W/stride)} for MODEL.SWIN.OUT_FEATURES,
    strides 4/8/16/32 (with PATCH_SIZE 4), widths EMBED_DIM * 2**i; size divisibility 32."""

    def __init__(self, cfg, input_shape: ShapeSpec) -> None:
        c = cfg.MODEL.SWIN
        out_indices = out_indices_of(c.OUT_FEATURES, "MODEL.SWIN.OUT_FEATURES")
        if len(c.DEPTHS) != len(FEATURE_NAMES) or len(c.NUM_HEADS) != len(c.DEPTHS):
            raise ValueError(
                f"MODEL.SWIN.DEPTHS {list(c.DEPTHS)} and MODEL.SWIN.NUM_HEADS "
                f"{list(c.NUM_HEADS)} must have one entry per level ({len(FEATURE_NAMES)})"
            )
        for i, heads in enumerate(c.NUM_HEADS):
            if (c.EMBED_DIM * 2**i) % heads:
                raise ValueError(
                    f"MODEL.SWIN.NUM_HEADS[{i}]={heads} does not divide level {i}'s width "
                    f"{c.EMBED_DIM * 2**i} (MODEL.SWIN.EMBED_DIM={c.EMBED_DIM} * 2**{i})"
                )
        if c.WINDOW_SIZE < 1 or c.PATCH_SIZE < 1:
            raise ValueError(
                f"MODEL.SWIN.WINDOW_SIZE={c.WINDOW_SIZE} and MODEL.SWIN.PATCH_SIZE="
                f"{c.PATCH_SIZE} must be >= 1"
            )
        super().__init__(
            pretrain_img_size=c.PRETRAIN_IMG_SIZE,
            patch_size=c.PATCH_SIZE,
            in_chans=input_shape.channels,
            embed_dim=c.EMBED_DIM,
            depths=c.DEPTHS,
            num_heads=c.NUM_HEADS,
            window_size=c.WINDOW_SIZE,
            mlp_ratio=c.MLP_RATIO,
            qkv_bias=c.QKV_BIAS,
            qk_scale=c.QK_SCALE,
            drop_rate=c.DROP_RATE,
            attn_drop_rate=c.ATTN_DROP_RATE,
            drop_path_rate=c.DROP_PATH_RATE,
            ape=c.APE,
            patch_norm=c.PATCH_NORM,
            out_indices=out_indices,
            use_checkpoint=c.USE_CHECKPOINT,
        )
        self.strides = [c.PATCH_SIZE * 2**i for i in range(self.num_levels)]
