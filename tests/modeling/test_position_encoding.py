"""PositionEmbeddingSine against DETR's formula written out per element (float64, plain Python
math): with and without normalisation, with padding masks, and the bad-argument error."""

import math

import pytest
import torch

from dinat_m2f.modeling.position_encoding import PositionEmbeddingSine


def reference(mask, num_pos_feats, temperature, normalize, scale):
    """DETR's sine embedding, one element at a time.

    A valid pixel's position along an axis is the number of valid pixels up to and including it
    on its column (y) or row (x); normalised, it is divided by the count of its whole column or
    row and multiplied by `scale`. Channel c < F of the output embeds y, channel F + c embeds x,
    with frequency temperature ** (2 * (c // 2) / F): sine on even c, cosine on odd c.
    """
    batch, height, width = mask.shape
    out = torch.zeros(batch, 2 * num_pos_feats, height, width, dtype=torch.float64)
    for b in range(batch):
        valid = [[not bool(mask[b, i, j]) for j in range(width)] for i in range(height)]
        for i in range(height):
            for j in range(width):
                y = sum(valid[r][j] for r in range(i + 1))
                x = sum(valid[i][c] for c in range(j + 1))
                if normalize:
                    y = y / (sum(valid[r][j] for r in range(height)) + 1e-6) * scale
                    x = x / (sum(valid[i][c] for c in range(width)) + 1e-6) * scale
                for c in range(num_pos_feats):
                    frequency = temperature ** (2 * (c // 2) / num_pos_feats)
                    wave = math.sin if c % 2 == 0 else math.cos
                    out[b, c, i, j] = wave(y / frequency)
                    out[b, num_pos_feats + c, i, j] = wave(x / frequency)
    return out


@pytest.mark.parametrize(
    "num_pos_feats, temperature, normalize, scale",
    [
        (8, 10000.0, False, None),
        (8, 10000.0, True, None),
        (6, 20.0, True, 1.5),
        (4, 100.0, False, None),
    ],
)
def test_matches_the_formula_per_element(num_pos_feats, temperature, normalize, scale):
    layer = PositionEmbeddingSine(num_pos_feats, temperature, normalize, scale)
    x = torch.randn(2, 3, 5, 7)
    out = layer(x)
    assert out.shape == (2, 2 * num_pos_feats, 5, 7) and out.dtype == torch.float32
    mask = torch.zeros(2, 5, 7, dtype=torch.bool)
    used_scale = 2 * math.pi if scale is None else scale  # None: the module's default, 2 pi
    expected = reference(mask, num_pos_feats, temperature, normalize, used_scale)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("normalize", [False, True])
def test_padding_mask_counts_only_valid_pixels(normalize):
    # image 0 unpadded; image 1 padded on its last 2 columns and last row; image 2 has a hole
    mask = torch.zeros(3, 4, 6, dtype=torch.bool)
    mask[1, :, 4:] = True
    mask[1, 3, :] = True
    mask[2, 1, 2] = True
    layer = PositionEmbeddingSine(4, normalize=normalize)
    out = layer(torch.zeros(3, 1, 4, 6), mask)
    expected = reference(mask, 4, 10000.0, normalize, 2 * math.pi)
    valid = ~mask[:, None].expand_as(out)
    # padded pixels have no defined position; every valid pixel must match
    torch.testing.assert_close(out.double()[valid], expected[valid], rtol=1e-5, atol=1e-5)


def test_only_the_shape_of_the_input_matters():
    layer = PositionEmbeddingSine(4, normalize=True)
    a, b = torch.randn(2, 3, 4, 5), 100 * torch.randn(2, 3, 4, 5)
    assert torch.equal(layer(a), layer(b))
    # the first normalised row and column are 1/H and 1/W of the way, the last ones all the way
    out = layer(a)
    torch.testing.assert_close(out[0, 0, :, 0], torch.sin(2 * math.pi * torch.arange(1, 5) / 4))
    torch.testing.assert_close(out[0, 4, 0, :], torch.sin(2 * math.pi * torch.arange(1, 6) / 5))


def test_scale_without_normalize_is_refused():
    with pytest.raises(ValueError, match="scale=3.0 needs normalize=True"):
        PositionEmbeddingSine(4, scale=3.0)
