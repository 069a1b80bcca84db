"""Blocks shared by the backbones (DiNAT / NAT / DiNAT_s and Mask2Former's Swin): the MLP,
Swin's patch embedding and patch merging, the releases' weight initialisation, the stochastic
depth schedule, activation checkpointing and the per-level output norms (`norm{i}`).

Module names (`fc1`/`fc2`, `proj`/`norm`, `norm`/`reduction`) are those of the Swin and DiNAT
releases, so their checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn


class Mlp(nn.Module):
    """Linear -> GELU -> Linear, with dropout after each."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class PatchEmbed(nn.Module):
    """Swin's stem: a patch x patch stride-patch convolution, then LayerNorm (optional):
    (B, C_in, H, W) -> (B, ceil(H/patch), ceil(W/patch), C), the input zero-padded at the
    bottom/right. `PatchEmbed(in_chans, embed_dim)` is DiNAT_s's tokenizer."""

    def __init__(
        self, in_chans: int = 3, embed_dim: int = 96, patch_size: int = 4, patch_norm: bool = True
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        pad_b, pad_r = (-x.shape[2]) % p, (-x.shape[3]) % p
        if pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        x = self.proj(x).permute(0, 2, 3, 1)
        return self.norm(x) if self.norm is not None else x


class PatchMerging(nn.Module):
    """Swin's downsampler: concatenates each 2x2 patch (4C), LayerNorm, Linear to 2C:
    (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C), odd sides zero-padded."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % 2 or x.shape[2] % 2:
            x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


def init_weights(module: nn.Module) -> None:
    """The releases' initialisation (DiNAT's and Swin's): truncated-normal(0.02) linear
    weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def level_widths(
    embed_dim: int, depths: Sequence[int], num_heads: Sequence[int], out_indices: Sequence[int]
) -> list[int]:
    """The width of each level, embed_dim * 2**i, after checking that `num_heads` has one entry
    per level of `depths` and that `out_indices` are levels.

    Raises:
        ValueError: naming the argument and the values.
    """
    if len(num_heads) != len(depths):
        raise ValueError(
            f"num_heads must have one entry per level like depths {list(depths)}, got "
            f"{list(num_heads)}"
        )
    if any(i not in range(len(depths)) for i in out_indices):
        raise ValueError(
            f"out_indices must be levels in 0..{len(depths) - 1}, got {list(out_indices)}"
        )
    return [int(embed_dim * 2**i) for i in range(len(depths))]


def drop_path_rates(drop_path_rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Stochastic depth growing linearly from 0 over all blocks to `drop_path_rate`: one list
    per level, one rate per block."""
    # Python floats from a CPU tensor, also when the model is built on the meta device
    rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
    starts = [sum(depths[:i]) for i in range(len(depths))]
    return [rates[start : start + depth] for start, depth in zip(starts, depths)]


def run_blocks(
    blocks: nn.ModuleList, x: torch.Tensor, *extra, use_checkpoint: bool, training: bool
) -> torch.Tensor:
    """x through each block (`block(x, *extra)`), recomputed in backward (activation
    checkpointing) when `use_checkpoint` and training with gradients."""
    checkpointed = use_checkpoint and training and torch.is_grad_enabled()
    for block in blocks:
        if checkpointed:
            x = torch.utils.checkpoint.checkpoint(block, x, *extra, use_reentrant=False)
        else:
            x = block(x, *extra)
    return x


def add_output_norms(model: nn.Module, widths: Sequence[int], out_indices: Sequence[int]) -> None:
    """One LayerNorm per returned level, `model.norm{i}` (the segmentation releases' names)."""
    for i in out_indices:
        model.add_module(f"norm{i}", nn.LayerNorm(widths[i]))


def normed_output(model: nn.Module, level: int, x: torch.Tensor) -> torch.Tensor:
    """A level's channels-last output (B, H, W, C) through `model.norm{level}`, made
    channels-first: (B, C, H, W)."""
    return getattr(model, f"norm{level}")(x).permute(0, 3, 1, 2).contiguous()


def level_outputs(
    model: nn.Module, levels: nn.ModuleList, x: torch.Tensor
) -> dict[int, torch.Tensor]:
    """Runs the levels (each returns (its output, the next level's input)) and returns
    {level i: (B, C_i, H_i, W_i)} for i in `model.out_indices`, each through `normed_output`."""
    outs = {}
    for i, level in enumerate(levels):
        level_out, x = level(x)
        if i in model.out_indices:
            outs[i] = normed_output(model, i, level_out)
    return outs
