"""The three sublayers of a Mask2Former decoder layer, and the prediction MLP.

Sequences are (length, batch, channels) as nn.MultiheadAttention expects by default. Each
sublayer adds its result to its input and normalises, after (post-norm, the default) or
before (pre-norm). Names follow Mask2Former so checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


def _xavier_init(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class _ResidualSublayer(nn.Module):
    """The residual and LayerNorm around a sublayer, after (post-norm) or before (pre-norm):
    subclasses set `norm`, `dropout` and `normalize_before`."""

    norm: nn.LayerNorm
    dropout: nn.Dropout
    normalize_before: bool

    def _sublayer_input(self, tgt: torch.Tensor) -> torch.Tensor:
        """What the sublayer reads: tgt normalised (pre-norm) or tgt itself (post-norm)."""
        return self.norm(tgt) if self.normalize_before else tgt

    def _residual_output(self, tgt: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """tgt + dropout(result), normalised after the sum in post-norm."""
        out = tgt + self.dropout(result)
        return out if self.normalize_before else self.norm(out)


class _AttentionSublayer(_ResidualSublayer):
    """An nn.MultiheadAttention named `attn_name` (the checkpoint's), `norm`, `dropout`.

    The attention is called as Mask2Former calls it (need_weights left on, so the same
    kernels and the same bits) but without averaging the weights over the heads: nobody reads
    them, and at 1024 x 1024 the average reads 105 MB per finest-level cross-attention
    layer."""

    def __init__(
        self, attn_name: str, d_model: int, nhead: int, dropout: float, normalize_before: bool
    ):
        super().__init__()
        self.add_module(attn_name, nn.MultiheadAttention(d_model, nhead, dropout=dropout))
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_init(self)


class SelfAttentionLayer(_AttentionSublayer):
    """Self-attention among the queries (checkpoint names `self_attn`, `norm`)."""

    def __init__(
        self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False
    ):
        super().__init__("self_attn", d_model, nhead, dropout, normalize_before)

    def forward(
        self,
        tgt: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tgt, query_pos: (Q, N, C). Returns (Q, N, C)."""
        x = self._sublayer_input(tgt)
        q = k = _with_pos(x, query_pos)
        attended = self.self_attn(
            q,
            k,
            value=x,
            attn_mask=tgt_mask,
            key_padding_mask=tgt_key_padding_mask,
            average_attn_weights=False,  # see _AttentionSublayer
        )[0]
        return self._residual_output(tgt, attended)


class CrossAttentionLayer(_AttentionSublayer):
    """Queries attend to image tokens, optionally masked (names `multihead_attn`, `norm`)."""

    def __init__(
        self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False
    ):
        super().__init__("multihead_attn", d_model, nhead, dropout, normalize_before)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tgt, query_pos: (Q, N, C); memory, pos: (S, N, C); memory_mask: (N * heads, Q, S)
        or (Q, S) for every image and head, bool, True where a query may NOT attend. Returns
        (Q, N, C)."""
        x = self._sublayer_input(tgt)
        attended = self.multihead_attn(
            query=_with_pos(x, query_pos),
            key=_with_pos(memory, pos),
            value=memory,
            attn_mask=memory_mask,
            key_padding_mask=memory_key_padding_mask,
            average_attn_weights=False,  # see _AttentionSublayer
        )[0]
        return self._residual_output(tgt, attended)


class FFNLayer(_ResidualSublayer):
    """Two-layer ReLU MLP on each query (names `linear1`, `linear2`, `norm`)."""

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        normalize_before: bool = False,
    ):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        """tgt: (Q, N, C). Returns (Q, N, C)."""
        x = self._sublayer_input(tgt)
        return self._residual_output(tgt, self.linear2(self.dropout(F.relu(self.linear1(x)))))


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (names `layers.{i}`)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x
