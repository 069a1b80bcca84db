"""Which input heights and widths one exported graph accepts.

The graph is traced with symbolic height and width (torch.export `Dim`s, multiples of the size
divisibility), so reshapes and window tables follow the input at run time. What cannot follow
is a branch on the size: a neighborhood-attention layer with kernel k and dilation d on a map
of stride s zero-pads inputs shorter than k * d * s pixels up to that size
(NeighborhoodAttention2D), so the traced graph holds for the sizes on the sample's side of
every such threshold. `size_range` finds those thresholds by running the model once and
returns the widest range around the sample that crosses none of them (up to `max_size`); a
file covers that range, and the runtime refuses sizes outside it (deploy/runtime.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import NeighborhoodAttention2D

# default upper bound of the height / width of a dynamic-size export (COCO's 1333 px test
# side padded to 1344 fits)
DEFAULT_MAX_SIZE = 2048


@dataclass
class SizeRange:
    """Heights and widths the graph accepts: multiples of `divisibility` in [min, max] per
    axis (min == max: a fixed size)."""

    divisibility: int
    min_height: int
    max_height: int
    min_width: int
    max_width: int

    @property
    def fixed(self) -> bool:
        return self.min_height == self.max_height and self.min_width == self.max_width

    def dims(self) -> dict[int, object]:
        """torch.export dynamic_shapes entry of the image (1, C, H, W): a `Dim` multiple of
        the divisibility per axis whose range is more than one size."""
        dims: dict[int, object] = {}
        div = self.divisibility
        for axis, name, low, high in (
            (2, "height", self.min_height, self.max_height),
            (3, "width", self.min_width, self.max_width),
        ):
            if low != high:
                dims[axis] = div * torch.export.Dim(
                    f"{name}_blocks", min=low // div, max=high // div
                )
        return dims


def padding_thresholds(graph: nn.Module, inputs: tuple) -> tuple[set[int], set[int]]:
    """Input heights and widths (pixels) below which some NA layer of `graph` pads: k * d * s
    per layer and axis, s its map's stride (found by running `graph` on `inputs` once)."""
    seen: list[tuple[NeighborhoodAttention2D, tuple[int, int]]] = []

    def record(module, args):
        seen.append((module, tuple(args[0].shape[1:3])))

    layers = [m for m in graph.modules() if isinstance(m, NeighborhoodAttention2D)]
    hooks = [layer.register_forward_pre_hook(record) for layer in layers]
    try:
        with torch.no_grad():
            graph(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    height, width = inputs[0].shape[2:]
    rows, cols = set(), set()
    for layer, (h, w) in seen:
        rows.add(layer.kernel_size[0] * layer.dilation[0] * (height // h))
        cols.add(layer.kernel_size[1] * layer.dilation[1] * (width // w))
    return rows, cols


def _axis_range(size: int, thresholds: set[int], div: int, max_size: int) -> tuple[int, int]:
    """The widest [low, high] of multiples of `div` around `size` that crosses no threshold
    (a layer pads below its threshold t: sizes >= t and sizes < t are different graphs)."""
    below = [t for t in thresholds if t <= size]
    above = [t for t in thresholds if t > size]
    low = max(-(-max(below) // div) * div, div) if below else div
    high = (min(above) - 1) // div * div if above else max(max_size // div * div, size)
    return low, high


def size_range(
    graph: nn.Module, inputs: tuple, divisibility: int, max_size: int = DEFAULT_MAX_SIZE
) -> SizeRange:
    """The sizes a graph traced on `inputs` (image first, (1, C, H, W)) holds for."""
    rows, cols = padding_thresholds(graph, inputs)
    height, width = inputs[0].shape[2:]
    low_h, high_h = _axis_range(height, rows, divisibility, max_size)
    low_w, high_w = _axis_range(width, cols, divisibility, max_size)
    return SizeRange(divisibility, low_h, high_h, low_w, high_w)


__all__ = ["DEFAULT_MAX_SIZE", "SizeRange", "padding_thresholds", "size_range"]
