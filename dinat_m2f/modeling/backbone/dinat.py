"""DiNAT and NAT (Hassani & Shi): a convolutional tokenizer, four levels of pre-norm
(dilated) neighborhood-attention blocks with relative positional bias, and 3x3 stride-2
convolutional downsamplers. NAT is DiNAT with every dilation 1; DiNAT_s (`DiNATs`) swaps in
Swin's patch embedding and patch merging. `D2DiNAT` and `D2DiNATs` are the detectron2
backbones (MODEL.DINAT).

Module names follow the released ImageNet checkpoints (`patch_embed.proj.{0,1}`,
`levels.{i}.blocks.{j}.{norm1,attn,norm2,mlp}`, `levels.{i}.downsample.{reduction,norm}`,
`norm`, `head`), and the per-level output norms of the segmentation release (`norm{i}`), so
those checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from torch import nn

from ...layers import DropPath, NeighborhoodAttention2D
from .adapter import Detectron2Backbone, out_indices_of
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


class ConvTokenizer(nn.Module):
    """Two 3x3 stride-2 convolutions (3 -> C/2 -> C, no activation), then LayerNorm:
    (B, 3, H, W) -> (B, H/4, W/4, C)."""

    def __init__(self, in_chans: int = 3, embed_dim: int = 64) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1),
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    """3x3 stride-2 convolution doubling the width (no bias), then LayerNorm; channels-last."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class NATBlock(nn.Module):
    """Pre-norm block: x + DropPath(attn(LN(x))), then x + DropPath(mlp(LN(x))), with optional
    layer scale (learned per-channel gammas)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int,
        dilation: int = 1,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = NeighborhoodAttention2D(
            dim,
            num_heads,
            kernel_size,
            dilation,
            qkv_bias,
            qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
        )
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        attn = self.attn(self.norm1(x))
        if self.layer_scale:
            x = x + self.drop_path(self.gamma1 * attn)
            return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))
        x = x + self.drop_path(attn)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class NATLevel(nn.Module):
    """The blocks of one level and the downsampler that ends it (absent on the last level)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        kernel_size: int,
        dilations: Sequence[int],
        downsample: nn.Module | None,
        drop_path: Sequence[float],
        use_checkpoint: bool = False,
        **block_kwargs,
    ) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            NATBlock(
                dim, num_heads, kernel_size, dilations[j], drop_path=drop_path[j], **block_kwargs
            )
            for j in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, W, C) -> (level output before downsampling, input of the next level)."""
        x = run_blocks(self.blocks, x, use_checkpoint=self.use_checkpoint, training=self.training)
        return x, (self.downsample(x) if self.downsample is not None else x)


def check_dilations(
    dilations: Sequence[Sequence[int]] | None, depths: Sequence[int]
) -> list[list[int]]:
    """Per-level, per-block dilations (all 1 when None), validated against `depths`."""
    if dilations is None:
        return [[1] * depth for depth in depths]
    dilations = [list(level) for level in dilations]
    if len(dilations) != len(depths):
        raise ValueError(
            f"dilations must have one list per level ({len(depths)} for depths "
            f"{list(depths)}), got {len(dilations)}: {dilations}"
        )
    for i, (level, depth) in enumerate(zip(dilations, depths)):
        if len(level) != depth:
            raise ValueError(
                f"dilations[{i}] must have one entry per block of level {i} (depth {depth}), "
                f"got {len(level)}: {level}"
            )
        if any(not isinstance(d, int) or d < 1 for d in level):
            raise ValueError(f"dilations[{i}] must hold ints >= 1, got {level}")
    return dilations


class DiNAT(nn.Module):
    """DiNAT / NAT. Input (B, 3, H, W), any size.

    Args:
        embed_dim: width C of level 0; level i has C * 2**i.
        depths, num_heads: blocks and heads per level (head dim 32 in the paper's variants).
        kernel_size: neighborhood size (odd).
        dilations: per level, one dilation per block; None for NAT (all 1).
        mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate: block settings.
        drop_path_rate: stochastic depth, growing linearly over all blocks to this rate.
        layer_scale: initial value of the layer-scale gammas, or None.
        out_indices: levels whose (LayerNorm'd, channels-first) outputs `forward_features`
            returns; their norms are `norm{i}`.
        num_classes: > 0 adds the ImageNet head (`norm`, average pool, `head`) for `forward`.
        frozen_stages: numbered as in the DiNAT release (and Swin): -1 trains all; 0 or 1
            freezes the tokenizer; k >= 2 also levels 0..k-2 (each with the downsampler that
            ends it); valid up to num_levels + 1 (everything but the output norms).
        use_checkpoint: recompute each block in backward (activation checkpointing).
        tokenizer, downsampler: the stem `(in_chans, embed_dim)` and the between-level
            module `(dim)` (DiNAT_s swaps in Swin-like ones).
    """

    def __init__(
        self,
        embed_dim: int = 64,
        depths: Sequence[int] = (3, 4, 6, 5),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        kernel_size: int = 7,
        dilations: Sequence[Sequence[int]] | None = None,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        layer_scale: float | None = None,
        in_chans: int = 3,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        num_classes: int = 0,
        frozen_stages: int = -1,
        use_checkpoint: bool = False,
        tokenizer: type[nn.Module] = ConvTokenizer,
        downsampler: type[nn.Module] = ConvDownsampler,
    ) -> None:
        super().__init__()
        self.widths = level_widths(embed_dim, depths, num_heads, out_indices)
        if not -1 <= frozen_stages <= len(depths) + 1:
            raise ValueError(
                f"frozen_stages must be in -1..{len(depths) + 1} (-1 none, 0/1 the tokenizer, "
                f"k >= 2 also levels 0..k-2), got {frozen_stages}"
            )
        self.dilations = check_dilations(dilations, depths)
        self.num_levels = len(depths)
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages

        self.patch_embed = tokenizer(in_chans, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = drop_path_rates(drop_path_rate, depths)
        self.levels = nn.ModuleList()
        for i, depth in enumerate(depths):
            self.levels.append(
                NATLevel(
                    self.widths[i],
                    depth,
                    num_heads[i],
                    kernel_size,
                    self.dilations[i],
                    downsample=downsampler(self.widths[i]) if i < self.num_levels - 1 else None,
                    drop_path=rates[i],
                    use_checkpoint=use_checkpoint,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    layer_scale=layer_scale,
                )
            )
        add_output_norms(self, self.widths, self.out_indices)
        self.num_classes = num_classes
        if num_classes > 0:
            self.norm = nn.LayerNorm(self.widths[-1])
            self.head = nn.Linear(self.widths[-1], num_classes)
        self.apply(init_weights)
        self._freeze_stages()

    def _frozen_modules(self) -> list[nn.Module]:
        """The DiNAT release's numbering (Swin's; stage 1 would be Swin's absolute position
        embedding, which DiNAT does not have): 0 and 1 the tokenizer, k >= 2 also levels
        0..k-2, and from 2 on the dropout after the tokenizer is off too. Unlike the release's
        code (which reaches for a `pos_drop` its segmentation backbone lacks), every value in
        range works."""
        if self.frozen_stages < 0:
            return []
        if self.frozen_stages < 2:
            return [self.patch_embed]
        return [self.patch_embed, self.pos_drop] + list(self.levels[: self.frozen_stages - 1])

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad_(False)

    def train(self, mode: bool = True) -> DiNAT:
        super().train(mode)
        self._freeze_stages()  # frozen parts stay in eval mode (no dropout / drop path)
        return self

    def forward_features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """(B, 3, H, W) -> {level i: (B, C_i, ~H/2**(i+2), ~W/2**(i+2))} for out_indices."""
        return level_outputs(self, self.levels, self.pos_drop(self.patch_embed(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet classification logits (needs num_classes > 0)."""
        if self.num_classes <= 0:
            raise RuntimeError(
                "DiNAT.forward classifies: build with num_classes > 0, or call "
                "forward_features for the level outputs"
            )
        x = self.pos_drop(self.patch_embed(x))
        for level in self.levels:
            _, x = level(x)
        return self.head(self.norm(x).mean(dim=(1, 2)))


class DiNATs(DiNAT):
    """DiNAT_s: DiNAT blocks in Swin's macro design (a 4x4 stride-4 patch embedding and
    patch-merging downsamplers, MLP ratio 4); same arguments as DiNAT."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("mlp_ratio", 4.0)
        super().__init__(tokenizer=PatchEmbed, downsampler=PatchMerging, **kwargs)


# ------------------------------------------------------------------------------------------
# Variants: the DiNAT release's ImageNet models (classification/dinat.py, nat.py), each
# constructor building the same architecture as the release's function of the same name
# (without the classifier unless num_classes > 0), plus dinat_large_k11 (the paper's
# Mask2Former backbone) and nat_large.

IMAGENET_224_K7 = {
    "mini": [[1, 8, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2], [1] * 5],
    "deep": [[1, 8, 1], [1, 4, 1, 4], [1, 2] * 9, [1] * 5],
}
# DiNAT-L fine-tuned at 384 px with kernel 7 (dinat_large_384)
IMAGENET_384_K7 = [[1, 13, 1], [1, 6, 1, 6], [1, 3] * 9, [1] * 5]
MASK2FORMER_K11 = [[1, 14, 1], [1, 4, 1, 7], [1, 2, 1, 3] * 4 + [1, 3], [1] * 5]


class Variant(NamedTuple):
    """One size of a model family: its DiNAT arguments (`Variant(...)._asdict()`)."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    mlp_ratio: float
    drop_path_rate: float
    layer_scale: float | None = None


VARIANTS = {
    "mini": Variant(64, (3, 4, 6, 5), (2, 4, 8, 16), mlp_ratio=3.0, drop_path_rate=0.2),
    "tiny": Variant(64, (3, 4, 18, 5), (2, 4, 8, 16), mlp_ratio=3.0, drop_path_rate=0.2),
    "small": Variant(96, (3, 4, 18, 5), (3, 6, 12, 24), mlp_ratio=2.0, drop_path_rate=0.3),
    "base": Variant(
        128, (3, 4, 18, 5), (4, 8, 16, 32), mlp_ratio=2.0, drop_path_rate=0.5, layer_scale=1e-5
    ),
    "large": Variant(192, (3, 4, 18, 5), (6, 12, 24, 48), mlp_ratio=2.0, drop_path_rate=0.35),
}


def _variant(name: str, dilated: bool, kernel_size: int = 7, **kwargs) -> DiNAT:
    settings = VARIANTS[name]._asdict()
    if dilated and "dilations" not in kwargs:
        if kernel_size == 11 and settings["depths"][2] == 18:
            kwargs["dilations"] = MASK2FORMER_K11
        else:
            kwargs["dilations"] = IMAGENET_224_K7["mini" if name == "mini" else "deep"]
    settings["kernel_size"] = kernel_size
    settings.update(kwargs)
    return DiNAT(**settings)


def dinat_mini(**kwargs) -> DiNAT:
    return _variant("mini", True, **kwargs)


def dinat_tiny(**kwargs) -> DiNAT:
    return _variant("tiny", True, **kwargs)


def dinat_small(**kwargs) -> DiNAT:
    return _variant("small", True, **kwargs)


def dinat_base(**kwargs) -> DiNAT:
    return _variant("base", True, **kwargs)


def dinat_large(**kwargs) -> DiNAT:
    """Kernel 7 with the ImageNet-224 dilations."""
    return _variant("large", True, **kwargs)


def dinat_large_k11(**kwargs) -> DiNAT:
    """Kernel 11 with the Mask2Former dilations (the paper's segmentation backbone)."""
    return _variant("large", True, kernel_size=11, **kwargs)


def dinat_large_384(**kwargs) -> DiNAT:
    """ImageNet-22K -> 1K at 384 px, kernel 7: dilations up to 13 / 6 / 3 / 1
    (`dinat_large_in22k_in1k_384.pth`)."""
    kwargs.setdefault("dilations", IMAGENET_384_K7)
    return _variant("large", True, **kwargs)


def dinat_large_384_11x11(**kwargs) -> DiNAT:
    """ImageNet-22K -> 1K at 384 px with kernel 11 and the 224 px dilations
    (`dinat_large_in22k_in1k_384_11x11.pth`)."""
    kwargs.setdefault("dilations", IMAGENET_224_K7["deep"])
    return _variant("large", True, kernel_size=11, **kwargs)


def dinat_large_21k(**kwargs) -> DiNAT:
    """The ImageNet-22K pretrained DiNAT-L (224 px, kernel 7, drop path 0.2;
    `dinat_large_in22k_224.pth`, 21841 classes)."""
    kwargs.setdefault("drop_path_rate", 0.2)
    return _variant("large", True, **kwargs)


def dinat_large_21k_11x11(**kwargs) -> DiNAT:
    """The ImageNet-22K DiNAT-L with its RPBs interpolated to kernel 11 and the 224 px dilations
    (`dinat_large_in22k_224_11x11interp.pth`)."""
    kwargs.setdefault("drop_path_rate", 0.2)
    kwargs.setdefault("dilations", IMAGENET_224_K7["deep"])
    return _variant("large", True, kernel_size=11, **kwargs)


def nat_mini(**kwargs) -> DiNAT:
    return _variant("mini", False, **kwargs)


def nat_tiny(**kwargs) -> DiNAT:
    return _variant("tiny", False, **kwargs)


def nat_small(**kwargs) -> DiNAT:
    """NAT-S has layer scale (1e-5) in the NAT release; DiNAT-S does not."""
    kwargs.setdefault("layer_scale", 1e-5)
    return _variant("small", False, **kwargs)


def nat_base(**kwargs) -> DiNAT:
    return _variant("base", False, **kwargs)


def nat_large(**kwargs) -> DiNAT:
    return _variant("large", False, **kwargs)


def _dilations_s_224(depths: Sequence[int]) -> list[list[int]]:
    """DiNAT_s at 224: [1, 8], [1, 4], [1, 2, ...], [1, 1]."""
    return [[1, 8][: depths[0]], [1, 4][: depths[1]], [1, 2] * (depths[2] // 2), [1] * depths[3]]


VARIANTS_S = {
    "tiny": Variant(96, (2, 2, 6, 2), (3, 6, 12, 24), mlp_ratio=4.0, drop_path_rate=0.2),
    "small": Variant(96, (2, 2, 18, 2), (3, 6, 12, 24), mlp_ratio=4.0, drop_path_rate=0.3),
    "base": Variant(128, (2, 2, 18, 2), (4, 8, 16, 32), mlp_ratio=4.0, drop_path_rate=0.5),
    "large": Variant(192, (2, 2, 18, 2), (6, 12, 24, 48), mlp_ratio=4.0, drop_path_rate=0.3),
}


def _variant_s(name: str, **kwargs) -> DiNATs:
    settings = VARIANTS_S[name]._asdict()
    settings["dilations"] = _dilations_s_224(settings["depths"])
    settings.update(kwargs)
    return DiNATs(**settings)


def dinat_s_tiny(**kwargs) -> DiNATs:
    return _variant_s("tiny", **kwargs)


def dinat_s_small(**kwargs) -> DiNATs:
    return _variant_s("small", **kwargs)


def dinat_s_base(**kwargs) -> DiNATs:
    return _variant_s("base", **kwargs)


def dinat_s_large(**kwargs) -> DiNATs:
    return _variant_s("large", **kwargs)


# ------------------------------------------------------------------------------------------
# detectron2 backbones, configured by MODEL.DINAT


@BACKBONE_REGISTRY.register()
class D2DiNAT(Detectron2Backbone, DiNAT):
    """Returns {"res2".."res5": (B, C_i, H/stride, W/stride)} for MODEL.DINAT.OUT_FEATURES,
    strides 4/8/16/32, widths EMBED_DIM * 2**i; any input size (size divisibility 32)."""

    tokenizer = ConvTokenizer
    downsampler = ConvDownsampler

    def __init__(self, cfg, input_shape: ShapeSpec) -> None:
        c = cfg.MODEL.DINAT
        out_indices = out_indices_of(c.OUT_FEATURES, "MODEL.DINAT.OUT_FEATURES")
        levels = len(c.DEPTHS)
        if not -1 <= c.FROZEN_STAGES <= levels + 1:
            raise ValueError(
                f"MODEL.DINAT.FROZEN_STAGES={c.FROZEN_STAGES} must be in -1..{levels + 1} (-1 "
                "none, 0/1 the tokenizer, k >= 2 also levels 0..k-2), the DiNAT release's "
                "numbering"
            )
        super().__init__(
            embed_dim=c.EMBED_DIM,
            depths=c.DEPTHS,
            num_heads=c.NUM_HEADS,
            kernel_size=c.KERNEL_SIZE,
            dilations=c.DILATIONS,
            mlp_ratio=c.MLP_RATIO,
            qkv_bias=c.QKV_BIAS,
            qk_scale=c.QK_SCALE,
            drop_rate=c.DROP_RATE,
            attn_drop_rate=c.ATTN_DROP_RATE,
            drop_path_rate=c.DROP_PATH_RATE,
            layer_scale=c.LAYER_SCALE,
            in_chans=input_shape.channels,
            out_indices=out_indices,
            frozen_stages=c.FROZEN_STAGES,
            use_checkpoint=c.USE_CHECKPOINT,
            tokenizer=self.tokenizer,
            downsampler=self.downsampler,
        )
        self.strides = [2 ** (i + 2) for i in range(self.num_levels)]


@BACKBONE_REGISTRY.register()
class D2DiNATs(D2DiNAT):
    """DiNAT_s as a detectron2 backbone, configured by MODEL.DINAT like D2DiNAT (set
    MLP_RATIO 4.0 for the paper's DiNAT_s)."""

    tokenizer = PatchEmbed
    downsampler = PatchMerging
