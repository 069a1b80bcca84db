"""The flip and resizes the mappers use (dinat_m2f/data/augmentations.py) on 1-pixel sides and
extreme aspect ratios, each beside detectron2's own, which fails there (the positive control)."""

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T

from dinat_m2f.data.augmentations import RandomFlip, ResizeScale, ResizeShortestEdge


def test_resize_shortest_edge_keeps_one_pixel_where_detectron2_rounds_to_zero():
    image = np.zeros((891, 1, 3), dtype=np.uint8)
    theirs = T.ResizeShortestEdge(8, 96).get_transform(image)
    assert (theirs.new_h, theirs.new_w) == (96, 0)
    with pytest.raises(ValueError, match="height and width must be > 0"):
        theirs.apply_image(image)
    ours = ResizeShortestEdge(8, 96).get_transform(image)
    assert ours.apply_image(image).shape == (96, 1, 3)
    assert ResizeShortestEdge(8, 96).get_transform(np.zeros((50, 30, 3), np.uint8)).new_w == 8


def test_resize_scale_keeps_one_pixel_where_detectron2_rounds_to_zero():
    image = np.zeros((1, 2048, 3), dtype=np.uint8)
    np.random.seed(0)
    theirs = T.ResizeScale(0.5, 0.5, 64, 64).get_transform(image)
    assert (theirs.new_h, theirs.new_w) == (0, 32)
    np.random.seed(0)
    ours = ResizeScale(0.5, 0.5, 64, 64).get_transform(image)
    assert ours.apply_image(image).shape == (1, 32, 3)


def test_a_flipped_1x1_image_becomes_a_tensor():
    image = np.arange(3, dtype=np.uint8).reshape(1, 1, 3)
    flip = dict(horizontal=True, vertical=False, prob=1.0)
    flipped = T.RandomFlip(**flip).get_transform(image).apply_image(image)
    with pytest.raises(ValueError, match="negative"):  # what detectron2's mapper does with it
        torch.as_tensor(np.ascontiguousarray(flipped.transpose(2, 0, 1)))
    ours = RandomFlip(**flip).get_transform(image)
    assert isinstance(ours, T.HFlipTransform)
    tensor = torch.as_tensor(np.ascontiguousarray(ours.apply_image(image).transpose(2, 0, 1)))
    np.testing.assert_array_equal(tensor.permute(1, 2, 0).numpy(), flipped)
