"""DiNAT / NAT as a detectron2 backbone (`D2DiNAT`), configured by MODEL.DINAT."""

from __future__ import annotations

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from .dinat import ConvDownsampler, ConvTokenizer, DiNAT

FEATURE_NAMES = ("res2", "res3", "res4", "res5")


def out_indices_of(out_features, config_key: str) -> list[int]:
    unknown = [name for name in out_features if name not in FEATURE_NAMES]
    if unknown or not out_features:
        raise ValueError(
            f"{config_key} must name features among {list(FEATURE_NAMES)}, got {list(out_features)}"
        )
    return [FEATURE_NAMES.index(name) for name in out_features]


@BACKBONE_REGISTRY.register()
class D2DiNAT(DiNAT, Backbone):
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
                "none, 0/1 the tokenizer, k >= 2 also levels 0..k-2), the DiNAT release's numbering"
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
        self._out_features = [FEATURE_NAMES[i] for i in out_indices]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(
                f"D2DiNAT: input must be (batch, channels, height, width), got {tuple(x.shape)}"
            )
        return {FEATURE_NAMES[i]: out for i, out in self.forward_features(x).items()}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            FEATURE_NAMES[i]: ShapeSpec(channels=self.widths[i], stride=2 ** (i + 2))
            for i in self.out_indices
        }

    @property
    def size_divisibility(self) -> int:
        return 32
