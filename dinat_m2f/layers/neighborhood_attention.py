"""The 2D (dilated) neighborhood-attention module of NAT / DiNAT."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.na import checks
from .na import IntOrTuple, na2d, na2d_av, na2d_qk


class NeighborhoodAttention2D(nn.Module):
    """Multi-head 2D neighborhood attention with relative positional bias.

    Input and output are channels-last (B, H, W, dim). Inputs smaller than
    kernel_size * dilation on an axis are attended as if zero-padded at the bottom/right
    before the qkv projection, and the output is cropped back, so any input size works. Only
    the real tokens are projected: a zero token's projection is the qkv bias, exactly, so the
    padding gets that (the official model projects the padded input; the results are the
    same).

    Args:
        dim: channels of the input and output.
        num_heads: attention heads; must divide `dim`.
        kernel_size: odd window size >= 3, an int or (kh, kw).
        dilation: an int or (dh, dw), >= 1.
        qkv_bias: whether the qkv projection has a bias.
        qk_scale: logit scale; defaults to head_dim ** -0.5.
        rel_pos_bias: learn a relative positional bias `rpb` of shape (heads, 2kh-1, 2kw-1).
        attn_drop: dropout on the attention weights (uses the unfused ops when active).
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: IntOrTuple,
        dilation: IntOrTuple = 1,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        rel_pos_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(
                f"{name}: num_heads must be >= 1 and divide dim, got dim={dim}, "
                f"num_heads={num_heads}"
            )
        self.kernel_size, self.dilation = checks.kernel_and_dilation(name, kernel_size, dilation, 2)
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if rel_pos_bias:
            self.rpb = nn.Parameter(
                torch.zeros(num_heads, 2 * self.kernel_size[0] - 1, 2 * self.kernel_size[1] - 1)
            )
            nn.init.trunc_normal_(self.rpb, std=0.02, a=-2.0, b=2.0)
        else:
            self.register_parameter("rpb", None)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> (B, H, W, dim)."""
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{type(self).__name__}: input must have shape (batch, height, width, {self.dim}),"
                f" got {tuple(x.shape)}"
            )
        batch, height, width, _ = x.shape
        min_h, min_w = (k * d for k, d in zip(self.kernel_size, self.dilation))
        # comparisons, not max(): traced with symbolic sizes (torch.export), each holds over
        # the traced range (export/sizes.py), so the padded size is the input's or the constant
        # minimum, where max() would leave Max() expressions later shape checks cannot decide
        padded_h = height if height >= min_h else min_h
        padded_w = width if width >= min_w else min_w
        qkv = self.qkv(x)
        if padded_h != height or padded_w != width:
            qkv = self._pad_projection(qkv, padded_h - height, padded_w - width)
        qkv = qkv.reshape(batch, padded_h, padded_w, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.unbind(3)
        # under autocast the projections return fp16/bf16 while the bias stays fp32
        rpb = None if self.rpb is None else self.rpb.to(query.dtype)
        if self.training and self.attn_drop.p > 0:
            logits = na2d_qk(
                query * self.scale, key, self.kernel_size, dilation=self.dilation, rpb=rpb
            )
            attn = self.attn_drop(logits.softmax(dim=-1))
            out = na2d_av(attn, value, self.kernel_size, dilation=self.dilation)
        else:
            out = na2d(
                query,
                key,
                value,
                self.kernel_size,
                dilation=self.dilation,
                rpb=rpb,
                scale=self.scale,
            )
        out = out.reshape(batch, padded_h, padded_w, self.dim)[:, :height, :width]
        return self.proj_drop(self.proj(out))

    def _pad_projection(self, qkv: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
        """The qkv projection of the input zero-padded by pad_h rows and pad_w columns, from
        the projection of the input alone: the padding projects to the bias (0 * w sums to 0),
        at a fraction of the cost where the padding is most of the map (a 5x5 map padded to
        7x7 projected twice its tokens)."""
        pad = (0, 0, 0, pad_w, 0, pad_h)
        padded = F.pad(qkv, pad)
        if self.qkv.bias is None:
            return padded
        inside = F.pad(torch.ones_like(qkv[..., :1]), pad)  # 1 on real tokens, 0 on the padding
        # under autocast the projection is fp16/bf16, which is what the bias becomes inside it
        return torch.where(inside > 0, padded, self.qkv.bias.to(qkv.dtype))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
            f"kernel_size={self.kernel_size}, dilation={self.dilation}, "
            f"rel_pos_bias={self.rpb is not None}"
        )
