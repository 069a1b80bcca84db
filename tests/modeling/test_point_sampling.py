"""point_sample against bilinear interpolation done by hand (zero outside the map, both
align_corners conventions), its gradient, and the uncertainty helpers' checks."""

import math

import pytest
import torch

from dinat_m2f.modeling.point_sampling import (
    mask_uncertainty,
    point_sample,
    uncertain_point_coords_with_randomness,
)


def bilinear_by_hand(image, x, y, align_corners):
    """Value of `image` (H, W) at normalised (x, y) in [0, 1]: the four surrounding pixels
    weighted by distance, pixels outside the map counting as 0."""
    height, width = image.shape
    if align_corners:  # 0 and 1 are the centres of the first and last pixels
        px, py = x * (width - 1), y * (height - 1)
    else:  # 0 and 1 are the outer edges of the map; pixel c has its centre at (c + 0.5) / W
        px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    fx, fy = px - x0, py - y0
    total = 0.0
    for row, wy in ((y0, 1 - fy), (y0 + 1, fy)):
        for col, wx in ((x0, 1 - fx), (x0 + 1, fx)):
            if 0 <= row < height and 0 <= col < width:
                total += wy * wx * float(image[row, col])
    return total


@pytest.mark.parametrize("align_corners", [False, True])
def test_flat_points_are_bilinear_samples(align_corners):
    torch.manual_seed(0)
    image = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    points = torch.rand(2, 40, 2, dtype=torch.float64)
    points[:, :4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.99, 0.02]])  # borders
    out = point_sample(image, points, align_corners=align_corners)
    assert out.shape == (2, 3, 40)
    for n in range(2):
        for c in range(3):
            for p in range(40):
                x, y = points[n, p].tolist()
                expected = bilinear_by_hand(image[n, c], x, y, align_corners)
                assert out[n, c, p].item() == pytest.approx(expected, abs=1e-12), (n, c, p)


def test_grid_points_give_a_map_equal_to_the_flat_samples():
    torch.manual_seed(1)
    image = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    grid = torch.rand(2, 3, 5, 2, dtype=torch.float64)
    out = point_sample(image, grid, align_corners=False)
    assert out.shape == (2, 4, 3, 5)
    flat = point_sample(image, grid.reshape(2, 15, 2), align_corners=False)
    torch.testing.assert_close(out.reshape(2, 4, 15), flat)


def test_gradient_is_the_bilinear_weights():
    image = torch.zeros(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    # x = 0.4, y = 0.3 on a 4 x 4 map (align_corners=False): pixel coordinates (1.1, 0.7),
    # so rows 0 / 1 get 0.3 / 0.7 and columns 1 / 2 get 0.9 / 0.1
    point = torch.tensor([[[0.4, 0.3]]], dtype=torch.float64)
    point_sample(image, point, align_corners=False).sum().backward()
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[0, 1], expected[0, 2] = 0.3 * 0.9, 0.3 * 0.1
    expected[1, 1], expected[1, 2] = 0.7 * 0.9, 0.7 * 0.1
    torch.testing.assert_close(image.grad[0, 0], expected)


def test_mask_uncertainty_is_minus_the_distance_to_zero_and_needs_one_channel():
    logits = torch.tensor([[[-3.0, -0.5, 0.0, 2.0]]])
    torch.testing.assert_close(mask_uncertainty(logits), torch.tensor([[[-3.0, -0.5, 0.0, -2.0]]]))
    with pytest.raises(ValueError, match=r"1 channel, got shape \(1, 2, 4\)"):
        mask_uncertainty(torch.zeros(1, 2, 4))


def test_uncertain_points_shape_range_and_bad_ratios():
    logits = torch.randn(3, 1, 8, 8)
    points = uncertain_point_coords_with_randomness(logits, mask_uncertainty, 20, 3.0, 0.75)
    assert points.shape == (3, 20, 2) and (points >= 0).all() and (points <= 1).all()
    with pytest.raises(ValueError, match="oversample_ratio must be >= 1, got 0.5"):
        uncertain_point_coords_with_randomness(logits, mask_uncertainty, 20, 0.5, 0.75)
    with pytest.raises(ValueError, match=r"importance_sample_ratio must be in \[0, 1\], got 1.5"):
        uncertain_point_coords_with_randomness(logits, mask_uncertainty, 20, 3.0, 1.5)
