"""The backbones' shared parts on their own (modeling/backbone/blocks.py, adapter.py): the
drop-path schedule against numpy's linspace, the level checks, Swin's patch embedding against
a hand-padded convolution, and the detectron2 adapter base on a toy model."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone

from dinat_m2f.modeling.backbone.adapter import Detectron2Backbone
from dinat_m2f.modeling.backbone.blocks import PatchEmbed, drop_path_rates, level_widths


def test_drop_path_rates_grow_linearly_over_all_blocks():
    rates = drop_path_rates(0.3, (2, 3, 1))
    assert [len(level) for level in rates] == [2, 3, 1]
    np.testing.assert_allclose(sum(rates, []), np.linspace(0, 0.3, 6), rtol=0, atol=1e-7)


def test_level_widths_double_and_check_heads_and_out_indices():
    assert level_widths(32, (1, 1, 1), (1, 2, 4), (0, 2)) == [32, 64, 128]
    with pytest.raises(ValueError, match=r"num_heads must have one entry per level .* \[1, 2\]"):
        level_widths(32, (1, 1, 1), (1, 2), (0,))
    with pytest.raises(ValueError, match=r"out_indices must be levels in 0\.\.2, got \[3\]"):
        level_widths(32, (1, 1, 1), (1, 2, 4), (3,))


def test_patch_embed_pads_the_bottom_right_to_the_patch():
    torch.manual_seed(0)
    embed = PatchEmbed(3, 8, patch_size=4)
    x = torch.randn(1, 3, 9, 6)
    padded = torch.zeros(1, 3, 12, 8)
    padded[:, :, :9, :6] = x
    conv = F.conv2d(padded, embed.proj.weight, embed.proj.bias, stride=4).permute(0, 2, 3, 1)
    expected = F.layer_norm(conv, (8,), embed.norm.weight, embed.norm.bias)
    torch.testing.assert_close(embed(x), expected)
    assert PatchEmbed(3, 8, patch_norm=False).norm is None


class Toy(Detectron2Backbone):
    """Two levels of widths 4 and 8 at strides 2 and 4; returns level 1 only."""

    def __init__(self) -> None:
        super().__init__()
        self.widths, self.strides, self.out_indices = [4, 8], [2, 4], (1,)

    def forward_features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return {1: x.new_zeros(x.shape[0], 8, x.shape[2] // 4, x.shape[3] // 4)}


def test_the_adapter_names_the_features_and_gives_their_shapes():
    toy = Toy()
    assert isinstance(toy, Backbone) and toy.size_divisibility == 32
    out = toy(torch.zeros(2, 3, 8, 12))
    assert list(out) == ["res3"] and out["res3"].shape == (2, 8, 2, 3)
    assert toy.output_shape() == {"res3": ShapeSpec(channels=8, stride=4)}
    assert toy._out_features == ["res3"]
    with pytest.raises(ValueError, match=r"Toy: input must be \(batch, channels, height, widt"):
        toy(torch.zeros(3, 8, 12))
