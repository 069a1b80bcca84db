"""torchvision's Swin Transformer as a detectron2 backbone (`D2TorchvisionSwin`), the baseline
the DiNAT paper compares against, configured by MODEL.TVSWIN (`add_tvswin_config` in
dinat_m2f/config.py).

The network is torchvision's `SwinTransformer` (its blocks, shifted-window attention and patch
merging, unchanged); this file only picks the hyperparameters, drops the classifier (`norm`,
`avgpool`, `head`) and adds one LayerNorm per returned level (`norm0`..`norm3`), as
Mask2Former's Swin backbone does. The stem and stages keep torchvision's names
(`features.{0..7}`), so torchvision's ImageNet checkpoints load unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from torch import nn
from torchvision.models import get_model_weights
from torchvision.models.swin_transformer import (
    PatchMerging,
    PatchMergingV2,
    SwinTransformer,
    SwinTransformerBlock,
    SwinTransformerBlockV2,
)

from .adapter import Detectron2Backbone, out_indices_of
from .blocks import add_output_norms, normed_output

PATCH_SIZE = 4


class SwinVariant(NamedTuple):
    """A Swin size: widths, blocks, heads, its default window and whether it has V2 blocks."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    v2: bool


# swin_t/s/b and the V2 ones are torchvision's builders' settings; swin_l is Swin-L (Liu et
# al. 2021), which torchvision does not ship.
SWIN_VARIANTS = {
    "swin_t": SwinVariant(96, (2, 2, 6, 2), (3, 6, 12, 24), window_size=7, v2=False),
    "swin_s": SwinVariant(96, (2, 2, 18, 2), (3, 6, 12, 24), window_size=7, v2=False),
    "swin_b": SwinVariant(128, (2, 2, 18, 2), (4, 8, 16, 32), window_size=7, v2=False),
    "swin_l": SwinVariant(192, (2, 2, 18, 2), (6, 12, 24, 48), window_size=7, v2=False),
    "swin_v2_t": SwinVariant(96, (2, 2, 6, 2), (3, 6, 12, 24), window_size=8, v2=True),
    "swin_v2_s": SwinVariant(96, (2, 2, 18, 2), (3, 6, 12, 24), window_size=8, v2=True),
    "swin_v2_b": SwinVariant(128, (2, 2, 18, 2), (4, 8, 16, 32), window_size=8, v2=True),
}


def build_swin_features(
    variant: str, window_size: int = 0, drop_path_rate: float = 0.3
) -> tuple[nn.Sequential, list[int]]:
    """torchvision's `SwinTransformer(...).features` for a variant, and its level widths.

    Args:
        variant: a key of SWIN_VARIANTS.
        window_size: attention window side; 0 for the variant's.
        drop_path_rate: stochastic depth of the last block (torchvision's linear schedule).
    """
    if variant not in SWIN_VARIANTS:
        raise ValueError(f"Swin variant must be one of {sorted(SWIN_VARIANTS)}, got {variant!r}")
    spec = SWIN_VARIANTS[variant]
    window = window_size or spec.window_size
    if window < 1:
        raise ValueError(
            f"Swin window_size must be >= 1 (or 0 for the variant's), got {window_size}"
        )
    block, merging = (
        (SwinTransformerBlockV2, PatchMergingV2)
        if spec.v2
        else (SwinTransformerBlock, PatchMerging)
    )
    model = SwinTransformer(
        patch_size=[PATCH_SIZE, PATCH_SIZE],
        embed_dim=spec.embed_dim,
        depths=list(spec.depths),
        num_heads=list(spec.num_heads),
        window_size=[window, window],
        stochastic_depth_prob=drop_path_rate,
        norm_layer=partial(nn.LayerNorm, eps=1e-5),
        block=block,
        downsample_layer=merging,
    )
    return model.features, [spec.embed_dim * 2**i for i in range(len(spec.depths))]


def imagenet_weights(variant: str, weights_name: str, window_size: int = 0):
    """The torchvision weights enum member named by MODEL.TVSWIN.WEIGHTS_IMAGENET, e.g.
    ("swin_t", "IMAGENET1K_V1") or ("swin_b", "DEFAULT"), checked without downloading."""
    if variant == "swin_l":
        raise ValueError(
            "MODEL.TVSWIN.WEIGHTS_IMAGENET: torchvision has no swin_l weights; set "
            'it to "" and load a Swin-L checkpoint with MODEL.WEIGHTS'
        )
    default_window = SWIN_VARIANTS[variant].window_size
    if window_size not in (0, default_window):
        raise ValueError(
            f"MODEL.TVSWIN.WEIGHTS_IMAGENET={weights_name!r} has window {default_window} "
            f"relative-position tables; MODEL.TVSWIN.WINDOW_SIZE={window_size} would not load "
            "them (set it to 0)"
        )
    enum = get_model_weights(variant)
    name = weights_name.split(".")[-1]  # "Swin_T_Weights.IMAGENET1K_V1" or "IMAGENET1K_V1"
    valid = list(enum.__members__)
    if name not in valid:
        raise ValueError(
            f"MODEL.TVSWIN.WEIGHTS_IMAGENET={weights_name!r} is not a member of {enum.__name__}; "
            f'use one of {valid} or ""'
        )
    return enum[name]


def features_state_dict(weights) -> dict[str, torch.Tensor]:
    """The `features.*` entries of a torchvision checkpoint, without the prefix (downloads
    it into torch hub's cache, checking its hash, unless it is there; read as plain data only
    by `load_plain_data`)."""
    from torch.hub import HASH_REGEX, download_url_to_file, get_dir

    from ...checkpoint.safe_load import load_plain_data

    filename = os.path.basename(urlparse(weights.url).path)
    cached = os.path.join(get_dir(), "checkpoints", filename)
    if not os.path.isfile(cached):
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        match = HASH_REGEX.search(filename)
        download_url_to_file(weights.url, cached, match.group(1) if match else None, progress=False)
    state = load_plain_data(cached)
    prefix = "features."
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


@BACKBONE_REGISTRY.register()
class D2TorchvisionSwin(Detectron2Backbone):
    """Returns {"res2".."res5": (B, C_i, ceil(H/stride), ceil(W/stride))} for
    MODEL.TVSWIN.OUT_FEATURES: strides 4/8/16/32, widths C * 2**i (C = 96 for T/S, 128 for B,
    192 for L), each level's output LayerNorm'd (`norm{i}`) and channels-first.

    Any input size: the input is zero-padded at the bottom/right to a multiple of the patch
    size (4); torchvision pads odd maps before patch merging and pads each map to a multiple of
    the window inside the attention, cropping back after it. size_divisibility is 32, as for
    Mask2Former's Swin (batches are padded to it).
    """

    def __init__(self, cfg, input_shape: ShapeSpec) -> None:
        super().__init__()
        c = cfg.MODEL.TVSWIN
        if input_shape.channels != 3:
            raise ValueError(
                f"D2TorchvisionSwin: torchvision's Swin takes 3 input channels, got "
                f"{input_shape.channels} (MODEL.PIXEL_MEAN has one entry per channel)"
            )
        self.out_indices = out_indices_of(c.OUT_FEATURES, "MODEL.TVSWIN.OUT_FEATURES")
        if c.VARIANT not in SWIN_VARIANTS:
            raise ValueError(
                f"MODEL.TVSWIN.VARIANT must be one of {sorted(SWIN_VARIANTS)}, got {c.VARIANT!r}"
            )
        weights = None  # checked before building, so a bad name fails fast
        if c.WEIGHTS_IMAGENET:
            weights = imagenet_weights(c.VARIANT, c.WEIGHTS_IMAGENET, c.WINDOW_SIZE)
        self.features, self.widths = build_swin_features(c.VARIANT, c.WINDOW_SIZE, c.DROP_PATH_RATE)
        self.window_size = c.WINDOW_SIZE or SWIN_VARIANTS[c.VARIANT].window_size
        self.strides = [PATCH_SIZE * 2**i for i in range(len(self.widths))]
        add_output_norms(self, self.widths, self.out_indices)
        if weights is not None:  # the output norms stay at their initialisation
            self.features.load_state_dict(features_state_dict(weights))

    @property
    def num_levels(self) -> int:
        return len(self.widths)

    def forward_features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """(B, 3, H, W) -> {level i: (B, C_i, ceil(H / 2**(i+2)), ceil(W / 2**(i+2)))}."""
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % PATCH_SIZE, 0, -height % PATCH_SIZE))
        x = self.features[0](x)  # conv 4x4 stride 4 -> (B, H/4, W/4, C), LayerNorm
        outs = {}
        for i in range(self.num_levels):
            x = self.features[2 * i + 1](x)  # the level's blocks, channels-last
            if i in self.out_indices:
                outs[i] = normed_output(self, i, x)
            if i < self.num_levels - 1:
                x = self.features[2 * i + 2](x)  # patch merging (pads odd sides)
        return outs


def swin_blocks(
    dim: int, num_heads: int, window_size: int, mlp_ratio: float = 4.0
) -> Sequence[nn.Module]:
    """One Swin "layer" for layer-level timing: torchvision's regular-window block followed by
    its shifted-window block (shift window // 2), channels-last (B, H, W, dim)."""
    return [
        SwinTransformerBlock(dim, num_heads, [window_size] * 2, [shift] * 2, mlp_ratio=mlp_ratio)
        for shift in (0, window_size // 2)
    ]
