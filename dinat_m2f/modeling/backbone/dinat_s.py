"""DiNAT_s: DiNAT blocks in Swin's macro design (a 4x4 stride-4 patch embedding and
patch-merging downsamplers, MLP ratio 4), registered in detectron2 as `D2DiNATs`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.modeling import BACKBONE_REGISTRY
from torch import nn

from .d2_dinat import D2DiNAT
from .dinat import DiNAT


class PatchEmbed(nn.Module):
    """4x4 stride-4 convolution then LayerNorm: (B, 3, H, W) -> (B, H/4, W/4, C)."""

    def __init__(self, in_chans: int = 3, embed_dim: int = 96) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=4, stride=4)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = (-x.shape[2]) % 4, (-x.shape[3]) % 4
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """Concatenates each 2x2 patch (4C), LayerNorm, Linear to 2C: (B, H, W, C) ->
    (B, ceil(H/2), ceil(W/2), 2C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % 2 or x.shape[2] % 2:
            x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class DiNATs(DiNAT):
    """DiNAT with Swin's tokenizer and downsamplers; same arguments as DiNAT."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("mlp_ratio", 4.0)
        super().__init__(tokenizer=PatchEmbed, downsampler=PatchMerging, **kwargs)


def _dilations_224(depths):
    """DiNAT_s at 224: [1, 8], [1, 4], [1, 2, ...], [1, 1]."""
    return [[1, 8][: depths[0]], [1, 4][: depths[1]], [1, 2] * (depths[2] // 2), [1] * depths[3]]


VARIANTS = {
    # embed_dim, depths, heads, drop_path_rate
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32), 0.5),
    "large": (192, (2, 2, 18, 2), (6, 12, 24, 48), 0.3),
}


def _variant(name: str, **kwargs) -> DiNATs:
    embed_dim, depths, heads, drop_path_rate = VARIANTS[name]
    settings = dict(
        embed_dim=embed_dim,
        depths=depths,
        num_heads=heads,
        drop_path_rate=drop_path_rate,
        dilations=_dilations_224(depths),
    )
    settings.update(kwargs)
    return DiNATs(**settings)


def dinat_s_tiny(**kwargs) -> DiNATs:
    return _variant("tiny", **kwargs)


def dinat_s_small(**kwargs) -> DiNATs:
    return _variant("small", **kwargs)


def dinat_s_base(**kwargs) -> DiNATs:
    return _variant("base", **kwargs)


def dinat_s_large(**kwargs) -> DiNATs:
    return _variant("large", **kwargs)


@BACKBONE_REGISTRY.register()
class D2DiNATs(D2DiNAT):
    """DiNAT_s as a detectron2 backbone, configured by MODEL.DINAT like D2DiNAT (set
    MLP_RATIO 4.0 for the paper's DiNAT_s)."""

    tokenizer = PatchEmbed
    downsampler = PatchMerging
