"""The detectron2 side of every backbone: feature names, out_features checked against them,
`forward` returning named features, `output_shape` and size divisibility, written once."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone

# detectron2's names of the four levels (strides 4/8/16/32 for a stride-4 stem)
FEATURE_NAMES = ("res2", "res3", "res4", "res5")


def out_indices_of(out_features: Sequence[str], config_key: str) -> list[int]:
    """Level indices of `out_features` (names among FEATURE_NAMES), read from `config_key`.

    Raises:
        ValueError: naming `config_key`, the valid names and the given ones.
    """
    unknown = [name for name in out_features if name not in FEATURE_NAMES]
    if unknown or not out_features:
        raise ValueError(
            f"{config_key} must name features among {list(FEATURE_NAMES)}, got {list(out_features)}"
        )
    return [FEATURE_NAMES.index(name) for name in out_features]


class Detectron2Backbone(Backbone):
    """Base of the registered backbones. A subclass lists it first, before the model class
    (`class D2DiNAT(Detectron2Backbone, DiNAT)`), and provides:

    - `forward_features(x)`: (B, C_in, H, W) -> {level i: (B, C_i, H_i, W_i)};
    - `widths` (C_i per level), `strides` (per level) and `out_indices` (returned levels).

    It gives `forward` ({"res2".."res5": ...}), `output_shape` and size divisibility 32.
    """

    def __init__(self, *args, **kwargs) -> None:
        # Backbone.__init__ takes no arguments: skip it, so that the model class after it in
        # the MRO (DiNAT, SwinTransformer, or nn.Module) gets them.
        super(Backbone, self).__init__(*args, **kwargs)

    @property
    def _out_features(self) -> list[str]:
        return [FEATURE_NAMES[i] for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C_in, H, W) -> {name: (B, C_i, ~H/stride_i, ~W/stride_i)} for out_features."""
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__}: input must be (batch, channels, height, width), got "
                f"{tuple(x.shape)}"
            )
        return {FEATURE_NAMES[i]: out for i, out in self.forward_features(x).items()}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            FEATURE_NAMES[i]: ShapeSpec(channels=self.widths[i], stride=self.strides[i])
            for i in self.out_indices
        }

    @property
    def size_divisibility(self) -> int:
        return 32
