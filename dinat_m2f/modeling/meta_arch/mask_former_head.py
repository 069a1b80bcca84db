"""Mask2Former's segmentation head: pixel decoder + transformer decoder ("predictor").

Registered in detectron2's SEM_SEG_HEADS_REGISTRY as "MaskFormerHead"; checkpoint names
`sem_seg_head.pixel_decoder.*` and `sem_seg_head.predictor.*`.

Checkpoints exchange with Mask2Former both ways: like Mask2Former's head, this one is version
2 in the state-dict metadata (`_version`, saved by `state_dict()` and kept by torch.save), and
a state dict whose metadata says version < 2, or nothing (e.g. a `.pkl` of plain dicts), gets
MaskFormer's old pixel-decoder names renamed on load (`rename_v1_pixel_decoder_keys`).
"""

from __future__ import annotations

import logging

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..pixel_decoder import build_pixel_decoder
from ..transformer_decoder import build_transformer_decoder

SUPPORTED_TRANSFORMER_IN_FEATURES = ("multi_scale_pixel_decoder",)

logger = logging.getLogger(__name__)


def rename_v1_pixel_decoder_keys(state_dict: dict, prefix: str) -> bool:
    """Mask2Former's upgrade of version-1 MaskFormerHead state dicts, in place: every key of
    `state_dict` containing "sem_seg_head" and not starting with `prefix + "predictor"` gets
    each occurrence of `prefix` replaced by `prefix + "pixel_decoder."`. Returns whether any
    key changed. (Applied to a version-2 dict this doubles "pixel_decoder.", exactly as
    Mask2Former does: the version metadata is what tells the two apart.)"""
    renamed = False
    for key in list(state_dict.keys()):
        if "sem_seg_head" in key and not key.startswith(prefix + "predictor"):
            new_key = key.replace(prefix, prefix + "pixel_decoder.")
            if new_key != key:
                state_dict[new_key] = state_dict.pop(key)
                renamed = True
    return renamed


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    """Args:
    input_shape: the backbone's outputs used by the pixel decoder.
    num_classes: classes without "no object".
    pixel_decoder: returns (mask features, encoder output, multi-scale maps).
    loss_weight: kept for Mask2Former config compatibility (losses are weighted by
        MODEL.MASK_FORMER.*_WEIGHT).
    ignore_value: the semantic label of ignored pixels.
    transformer_predictor: the transformer decoder.
    transformer_in_feature: what the decoder reads ("multi_scale_pixel_decoder").
    """

    _version = 2  # state-dict metadata, as Mask2Former's MaskFormerHead

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        version = local_metadata.get("version", None)
        if (version is None or version < 2) and rename_v1_pixel_decoder_keys(state_dict, prefix):
            logger.warning(
                "%s: state dict of version %s (< 2): pixel decoder keys renamed to "
                "'%spixel_decoder.*' as Mask2Former does; save the model again to upgrade it",
                type(self).__name__,
                version,
                prefix,
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
    ) -> None:
        super().__init__()
        if transformer_in_feature not in SUPPORTED_TRANSFORMER_IN_FEATURES:
            raise ValueError(
                f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={transformer_in_feature!r} is not "
                f"supported; use one of {SUPPORTED_TRANSFORMER_IN_FEATURES}"
            )
        self.in_features = [k for k, _ in sorted(input_shape.items(), key=lambda kv: kv[1].stride)]
        self.ignore_value = ignore_value
        self.common_stride = 4
        self.loss_weight = loss_weight
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        missing = [name for name in head.IN_FEATURES if name not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES names {missing}, which the backbone does not "
                f"output (it outputs {sorted(input_shape)})"
            )
        if cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE == "multi_scale_pixel_decoder":
            predictor_in_channels = head.CONVS_DIM
        else:
            predictor_in_channels = head.MASK_DIM
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "ignore_value": head.IGNORE_VALUE,
            "num_classes": head.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": head.LOSS_WEIGHT,
            "transformer_in_feature": cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE,
            "transformer_predictor": build_transformer_decoder(
                cfg, predictor_in_channels, mask_classification=True
            ),
        }

    def forward(self, features: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> dict:
        """features: backbone maps by name. Returns the decoder's predictions dict."""
        mask_features, _, multi_scale_features = self.pixel_decoder.forward_features(features)
        return self.predictor(multi_scale_features, mask_features, mask)
