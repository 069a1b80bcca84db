"""Drawing one image of the built-in synthetic dataset and its annotation.

Things (circle, square, triangle, star: several instances per image, random sizes, rotations
and per-class colour tints, overlapping with occlusion) on 2-3 procedurally textured background
regions (stuff: sky, grass, water, wall), separated by 1-pixel void lines. A class is
recognisable by shape and colour (things) or texture and colour (stuff), so a small model
learns it in a few CPU minutes. Everything is drawn from the generator passed in, so an image
is a pure function of its seed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..datasets.builtin_shapes import SHAPES_CATEGORIES
from ..formats import unique_segment_colors

__all__ = ["render_image"]

_THINGS = [c for c in SHAPES_CATEGORIES if c["isthing"]]
_STUFF = [c for c in SHAPES_CATEGORIES if not c["isthing"]]
_CONTIGUOUS = {c["id"]: i for i, c in enumerate(SHAPES_CATEGORIES)}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) noise in [-1, 1], bilinear upsampling of a (cells+1)^2 random grid."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))
    t = np.linspace(0.0, cells, size, endpoint=False)
    i = t.astype(int)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _texture(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 texture of a stuff class (0..255 range)."""
    s = size / 160.0
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if name == "sky":  # vertical gradient with soft clouds
        t = (y / size)[..., None]
        top, bottom = np.array([55, 105, 205]), np.array([150, 195, 245])
        img = top * (1 - t) + bottom * t
        clouds = np.clip(_smooth_noise(rng, size, 4), 0, None)[..., None]
        img = img + clouds * np.array([70, 55, 25])
    elif name == "grass":  # green with vertical blades
        n = rng.normal(0.0, 1.0, (size, size))
        blades = (n + np.roll(n, 1, axis=0) + np.roll(n, 2, axis=0)) / math.sqrt(3.0)
        img = np.array([55, 140, 45]) + blades[..., None] * np.array([10, 28, 8])
    elif name == "water":  # blue with horizontal ripples
        phase = rng.uniform(0, 2 * math.pi)
        wobble = 1.5 * np.sin(2 * math.pi * x / (25 * s) + phase)
        ripple = np.sin(2 * math.pi * y / (7 * s) + wobble)
        img = np.array([30, 85, 155]) + ripple[..., None] * np.array([10, 25, 30])
        img = img + rng.normal(0.0, 4.0, (size, size, 1))
    elif name == "wall":  # bricks with light mortar
        bh = max(3, round(8 * s))
        bw = 2 * bh
        row = (y // bh).astype(int)
        shifted = x + (row % 2) * (bw // 2)
        col = (shifted // bw).astype(int)
        jitter = rng.integers(-18, 19, size=(size // bh + 2, size // bw + 3, 1))
        img = np.array([130, 80, 60]) + jitter[row, col]
        mortar = (y % bh == 0) | (shifted % bw == 0)
        img = np.where(mortar[..., None], np.array([175, 170, 160]), img)
        img = img + rng.normal(0.0, 3.0, (size, size, 1))
    else:
        raise ValueError(f"unknown stuff class {name!r}")
    return np.broadcast_to(img, (size, size, 3)).astype(np.float32)


def _shape_mask(cls: str, cx: float, cy: float, r: float, angle: float, size: int) -> np.ndarray:
    """(size, size) bool mask of a filled shape of circumradius `r`."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if cls == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        if cls == "square":
            radii, n = [r * 0.9], 4
        elif cls == "triangle":
            radii, n = [r], 3
        elif cls == "star":
            radii, n = [r, r * 0.45], 10
        else:
            raise ValueError(f"unknown thing class {cls!r}")
        pts = []
        for k in range(n):
            rad = radii[k % len(radii)]
            a = angle + 2 * math.pi * k / n
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        draw.polygon(pts, fill=1)
    return np.asarray(canvas, dtype=bool)


def _stuff_regions(rng: np.random.Generator, size: int, k: int) -> np.ndarray:
    """(size, size) region index 0..k-1: bands split by wavy boundaries."""
    coord = np.arange(size, dtype=np.float32)
    bases = np.sort(rng.uniform(0.2, 0.8, size=k - 1)) * size
    for j in range(1, len(bases)):  # keep bands at least 15% apart
        bases[j] = max(bases[j], bases[j - 1] + 0.15 * size)
    region = np.zeros((size, size), dtype=np.int64)
    for b in bases:
        amp = rng.uniform(0.0, 0.08) * size
        freq = rng.integers(1, 3)
        phase = rng.uniform(0, 2 * math.pi)
        boundary = b + amp * np.sin(2 * math.pi * freq * coord / size + phase)  # along x
        region += (coord[:, None] >= boundary[None, :]).astype(np.int64)
    if rng.uniform() < 0.3:  # vertical bands
        region = region.T.copy()
    return region


def render_image(rng: np.random.Generator, size: int) -> dict[str, Any]:
    """One synthetic image and its annotation.

    Returns:
        dict with "image" (size, size, 3) uint8 RGB, "ids" (size, size) int64 segment ids
        (0 = void), "segments" list of (segment id, category dict, bool mask) in drawing
        order (stuff first), "semantic" (size, size) uint8 contiguous labels (255 = void).
    """
    k = int(rng.integers(2, 4))
    stuff = [_STUFF[i] for i in rng.choice(len(_STUFF), size=k, replace=False)]
    region = _stuff_regions(rng, size, k)
    void = np.zeros((size, size), dtype=bool)
    void[1:, :] |= region[1:, :] != region[:-1, :]
    void[:, 1:] |= region[:, 1:] != region[:, :-1]

    image = np.zeros((size, size, 3), dtype=np.float32)
    for j, cat in enumerate(stuff):
        m = region == j
        image[m] = _texture(cat["name"], rng, size)[m]

    # things, drawn in order; later ones occlude earlier ones
    inst = np.zeros((size, size), dtype=np.int64)  # 0 none, j+1 thing j
    things: list[tuple[dict, np.ndarray, int]] = []  # (category, full mask, full area)
    for _ in range(int(rng.integers(2, 6))):
        for _attempt in range(20):
            cat = _THINGS[int(rng.integers(len(_THINGS)))]
            r = rng.uniform(0.08, 0.2) * size
            cx, cy = rng.uniform(0.6 * r, size - 0.6 * r, size=2)
            mask = _shape_mask(cat["name"], cx, cy, r, rng.uniform(0, 2 * math.pi), size)
            area = int(mask.sum())
            if area < 0.004 * size * size:
                continue
            # every earlier thing keeps at least half of its area visible
            kept = [((inst == j + 1) & ~mask).sum() for j in range(len(things))]
            if all(k >= 0.5 * a for k, (_, _, a) in zip(kept, things)):
                break
        else:
            continue
        tint = np.array(cat["color"], dtype=np.float32) + rng.integers(-25, 26, size=3)
        light = rng.uniform(0, 2 * math.pi)  # direction of a soft shading gradient
        yy, xx = np.mgrid[0:size, 0:size]
        shade = ((xx - cx) * math.cos(light) + (yy - cy) * math.sin(light)) / r * 12.0
        color = tint[None, None, :] + shade[..., None] + rng.normal(0.0, 3.0, (size, size, 1))
        image[mask] = color[mask]
        inst[mask] = len(things) + 1
        things.append((cat, mask, area))

    image = np.clip(np.round(image), 0, 255).astype(np.uint8)

    # annotation: stuff segments, then visible thing segments
    taken: set[int] = set()
    ids = np.zeros((size, size), dtype=np.int64)
    semantic = np.full((size, size), 255, dtype=np.uint8)
    segments = []
    for j, cat in enumerate(stuff):
        m = (region == j) & ~void & (inst == 0)
        if m.any():
            sid, _ = unique_segment_colors(cat["color"], taken, rng)
            ids[m] = sid
            semantic[m] = _CONTIGUOUS[cat["id"]]
            segments.append((sid, cat, m))
    for j, (cat, _, _) in enumerate(things):
        m = inst == j + 1
        if m.any():
            sid, _ = unique_segment_colors(cat["color"], taken, rng)
            ids[m] = sid
            semantic[m] = _CONTIGUOUS[cat["id"]]
            segments.append((sid, cat, m))
    return {"image": image, "ids": ids, "segments": segments, "semantic": semantic}
