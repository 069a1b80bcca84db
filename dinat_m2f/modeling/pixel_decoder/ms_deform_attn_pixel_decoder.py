"""Mask2Former's pixel decoder: a deformable transformer encoder over the coarse levels and an
FPN path down to the finest level, which gives the per-pixel mask features.

Registered in detectron2's SEM_SEG_HEADS_REGISTRY as "MSDeformAttnPixelDecoder" (built by
`build_pixel_decoder` from MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME).
"""

from __future__ import annotations

import math

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..position_encoding import PositionEmbeddingSine
from .ms_deform_attn_encoder import MSDeformAttnTransformerEncoderOnly

# the transformer decoder reads this many of the coarsest outputs (1/32, 1/16, 1/8)
MASKFORMER_NUM_FEATURE_LEVELS = 3


def canonical_strides(x: torch.Tensor) -> torch.Tensor:
    """x, viewed with the canonical channels-last strides when it is one image laid out
    channels-last, else x itself.

    An encoder map (a transposed token split) is channels-last, but with one image its size-1
    batch dimension keeps the split's stride, and torch then takes the map for channels-first:
    bilinear upsampling still computes channels-last (the same numbers) but allocates its
    output channels-first and converts it, two copies (230 ms for 256 x 256 x 256 floats).
    """
    n, c, h, w = x.shape
    if n == 1 and x.stride()[1:] == (1, w * c, c):
        # a view: reshaping the (1, H, W, C) permutation recomputes the batch stride
        return x.permute(0, 2, 3, 1).reshape(n, h, w, c).permute(0, 3, 1, 2)
    return x


def build_pixel_decoder(cfg, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """The pixel decoder named by MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    try:
        decoder_class = SEM_SEG_HEADS_REGISTRY.get(name)
    except KeyError as error:
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} is not registered in "
            "SEM_SEG_HEADS_REGISTRY (this project provides 'MSDeformAttnPixelDecoder')"
        ) from error
    model = decoder_class(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} has no forward_features(); "
            "a Mask2Former pixel decoder must return (mask_features, encoder output, "
            "multi-scale features)"
        )
    return model


@SEM_SEG_HEADS_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Args:
    input_shape: the backbone's outputs used (name -> ShapeSpec with channels and stride).
    transformer_dropout / transformer_nheads / transformer_dim_feedforward /
        transformer_enc_layers: the deformable encoder.
    transformer_in_features: the maps the encoder reads (e.g. res3..res5).
    conv_dim: width of every map after projection; mask_dim: channels of the mask features.
    norm: detectron2 norm name of the FPN convs ("GN": GroupNorm(32, conv_dim)).
    common_stride: stride of the mask features (4: the FPN path goes down to res2).
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: str | None = None,
        transformer_in_features: list[str],
        common_stride: int,
        transformer_enc_n_points: int = 4,
    ) -> None:
        super().__init__()
        missing = [name for name in transformer_in_features if name not in input_shape]
        if missing:
            raise ValueError(
                "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES names "
                f"{missing}, which are not among the head's inputs {sorted(input_shape)} "
                "(MODEL.SEM_SEG_HEAD.IN_FEATURES)"
            )
        by_stride = sorted(input_shape.items(), key=lambda item: item[1].stride)
        self.in_features = [name for name, _ in by_stride]  # fine to coarse
        transformer_shapes = sorted(
            ((n, input_shape[n]) for n in transformer_in_features), key=lambda item: item[1].stride
        )
        self.transformer_in_features = [name for name, _ in transformer_shapes]
        transformer_in_channels = [shape.channels for _, shape in transformer_shapes]
        self.transformer_feature_strides = [shape.stride for _, shape in transformer_shapes]
        self.transformer_num_feature_levels = len(self.transformer_in_features)

        # 1x1 projection + GroupNorm per encoder level, coarsest first
        if self.transformer_num_feature_levels > 1:
            self.input_proj = nn.ModuleList(
                nn.Sequential(
                    nn.Conv2d(channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim)
                )
                for channels in transformer_in_channels[::-1]
            )
        else:
            self.input_proj = nn.ModuleList(
                [
                    nn.Sequential(
                        nn.Conv2d(transformer_in_channels[-1], conv_dim, kernel_size=1),
                        nn.GroupNorm(32, conv_dim),
                    )
                ]
            )
        for projection in self.input_proj:
            nn.init.xavier_uniform_(projection[0].weight, gain=1)
            nn.init.constant_(projection[0].bias, 0)

        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=transformer_enc_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        weight_init.c2_xavier_fill(self.mask_features)

        self.maskformer_num_feature_levels = MASKFORMER_NUM_FEATURE_LEVELS
        self.common_stride = common_stride
        finest_encoder_stride = min(self.transformer_feature_strides)
        if common_stride > finest_encoder_stride or finest_encoder_stride % common_stride:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.COMMON_STRIDE={common_stride} must divide the finest encoder "
                f"stride {finest_encoder_stride} (DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES)"
            )
        # FPN levels between the encoder's finest map and the mask features' stride
        self.num_fpn_levels = int(math.log2(finest_encoder_stride) - math.log2(common_stride))
        use_bias = norm == ""
        lateral_convs, output_convs = [], []
        for idx, name in enumerate(self.in_features[: self.num_fpn_levels]):
            lateral_conv = Conv2d(
                input_shape[name].channels,
                conv_dim,
                kernel_size=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
            )
            output_conv = Conv2d(
                conv_dim,
                conv_dim,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
                activation=F.relu,
            )
            weight_init.c2_xavier_fill(lateral_conv)
            weight_init.c2_xavier_fill(output_conv)
            # checkpoint names: adapter_1 / layer_1 for the finest level, and so on
            self.add_module(f"adapter_{idx + 1}", lateral_conv)
            self.add_module(f"layer_{idx + 1}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # applied coarse to fine
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            # Mask2Former's encoder takes the decoder's head count (its N_HEADS key is unread)
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "transformer_dim_feedforward": head.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
            "transformer_enc_n_points": head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
            "common_stride": head.COMMON_STRIDE,
        }

    def forward_features(
        self, features: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """features: backbone maps by name, (N, C_name, H_name, W_name).

        Returns mask features (N, mask_dim, H/common_stride, W/common_stride), the encoder's
        coarsest output (N, conv_dim, H/32, W/32) and up to 3 multi-scale maps, coarse to fine.
        Runs in float32 even under autocast (as Mask2Former does: the sampling offsets are
        sensitive to precision).
        """
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward_features_fp32(features)

    def _forward_features_fp32(self, features):
        srcs, pos = [], []
        for idx, name in enumerate(self.transformer_in_features[::-1]):
            x = features[name].float()
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        tokens, _, _ = self.transformer(srcs, pos)
        # the levels' sizes are the inputs' (no host read of the encoder's shape tensor)
        shapes = [tuple(src.shape[-2:]) for src in srcs]
        level_tokens = torch.split(tokens, [h * w for h, w in shapes], dim=1)
        out = [
            t.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
            for t, (h, w) in zip(level_tokens, shapes)
        ]
        # FPN: add each finer backbone map to the upsampled coarser output
        for idx, name in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
            lateral = self.lateral_convs[idx](features[name].float())
            merged = lateral + F.interpolate(
                canonical_strides(out[-1]),
                size=lateral.shape[-2:],
                mode="bilinear",
                align_corners=False,
            )
            out.append(self.output_convs[idx](merged))
        multi_scale_features = out[: self.maskformer_num_feature_levels]
        return self.mask_features(out[-1]), out[0], multi_scale_features
