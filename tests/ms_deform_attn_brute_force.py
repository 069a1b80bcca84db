"""A brute-force multi-scale deformable attention oracle, independent of the package's
implementations (no grid_sample, none of the kernels' corner arithmetic).

Every (batch, query, head, level, point) sample is computed with plain Python loops over the
pixels around the location, each weighted by the tent function
max(0, 1 - |px - i|) * max(0, 1 - |py - j|) written as scalar tensor expressions, so autograd
gives the gradients of value, locations and weights. Only for small sizes.
"""

import math

import torch


def ms_deform_attn_brute_force(value, spatial_shapes, level_start_index, locations, weights):
    """Same contract as dinat_m2f.layers.ms_deform_attn; returns (batch, len_q, heads*dim)."""
    batch, _, heads, dim = value.shape
    len_q, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
    rows = []
    for b in range(batch):
        for q in range(len_q):
            for h in range(heads):
                total = value.new_zeros(dim)
                for level in range(levels):
                    height, width = (int(s) for s in spatial_shapes[level])
                    start = int(level_start_index[level])
                    for p in range(points):
                        x, y = locations[b, q, h, level, p]
                        px, py = x * width - 0.5, y * height - 0.5  # pixel centres at integers
                        sample = value.new_zeros(dim)
                        # the pixels within distance 1 of (px, py) on both axes
                        for j in range(math.floor(py.item()), math.floor(py.item()) + 2):
                            for i in range(math.floor(px.item()), math.floor(px.item()) + 2):
                                if not (0 <= i < width and 0 <= j < height):
                                    continue  # zero padding
                                tent = (1 - (px - i).abs()) * (1 - (py - j).abs())
                                sample = sample + tent * value[b, start + j * width + i, h]
                        total = total + weights[b, q, h, level, p] * sample
                rows.append(total)
    if not rows:  # an empty batch or query set
        return value.new_zeros(batch, len_q, heads * dim)
    return torch.stack(rows).reshape(batch, len_q, heads * dim)
