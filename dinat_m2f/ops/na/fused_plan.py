"""The tile plan of the fused NA kernels (fused_kernels.py), and the work it implies.

Forward and dQ: a program takes the queries of one dilation group whose window starts fall in
an SH x SW range of start values, and reads only the box of keys those windows cover: exactly
(SH + kh - 1) x (SW + kw - 1) keys. Away from the borders that is SH x SW queries; at a border,
where windows stop shifting, every query whose window starts there joins the same tile (up to
k//2 more per axis), all sharing its box. The tile's queries are taken BLOCK_Q at a time and
the box BLOCK_K keys at a time (row-major), and scores outside a query's own window are masked.

dK and dV: the mirror image. A program takes a KTH x KTW block of keys of one group and reads
the box of queries whose windows can hold them, BLOCK_Q_KV at a time. The keys' sets of
queries change shape at two places per axis: keys below `kernel` are held by windows reaching
the start of the axis (not all of them), keys from `length - kernel` on by windows reaching
its end; between them each key is held by the `kernel` queries around it. The key tiles can
start up to KTH - 1 / KTW - 1 positions before the axis, so that tile edges fall on those
places (on a 14-long axis with kernel 11, keys 3..10 are held by every query: a 4-key tile
from 3 to 6 uses its whole query box, one from 2 to 5 does not).

Sizes are chosen per problem to compute the fewest scores (ties: larger blocks, up to the
register caps below). The launcher and the efficiency benchmark both take their numbers from
here, so what the benchmark reports is what the kernels compute.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

BLOCKS = (16, 32, 64)  # BLOCK_Q, BLOCK_K, BLOCK_Q_KV (tl.dot needs at least 16)
# Scores a program holds at once (BLOCK_Q x BLOCK_K; key tile x BLOCK_Q_KV), and the rows of a
# query block: larger blocks spill registers (with 4 warps; docs/kernel_resources.md). The caps
# never cost computed scores: chunks of 16 waste no more than chunks of 32 or 64, so the
# fewest scores are always reachable with 16-blocks, and the caps only decide ties.
MAX_BLOCK_SCORES = 1024
MAX_BLOCK_Q = 32
MAX_START_RANGE = 16
_KEY_TILES_2D = [
    (h, w) for h in (1, 2, 4, 8, 16) for w in (1, 2, 4, 8, 16, 32, 64) if h * w in BLOCKS
]
_KEY_TILES_1D = [(1, w) for w in BLOCKS]


@dataclass(frozen=True)
class Axis:
    length: int
    kernel: int
    dilation: int

    @property
    def longest_group(self) -> int:
        return -(-self.length // self.dilation)

    def group_lengths(self) -> np.ndarray:
        groups = np.arange(self.dilation)
        return (self.length - groups + self.dilation - 1) // self.dilation

    def start_tiles(self, size: int) -> int:
        """Tiles of `size` window starts along the axis (of the longest group)."""
        return -(-(self.longest_group - self.kernel + 1) // size)

    def key_tiles(self, size: int, offset: int) -> int:
        """Tiles of `size` keys along the axis (of the longest group), the first starting
        `offset` positions before it."""
        return -(-(self.longest_group + offset) // size)

    def key_offsets(self, size: int) -> set[int]:
        """Offsets that put a tile edge where the keys' sets of queries change shape (at
        `kernel` and at `length - kernel` in every group), and 0."""
        edges = [self.kernel, *(self.group_lengths() - self.kernel)]
        return {0} | {int(-edge % size) for edge in edges}


@dataclass(frozen=True)
class Plan:
    sh: int  # window-start rows per query tile
    sw: int  # window-start columns per query tile
    block_q: int  # queries per chunk (forward, dQ)
    block_k: int  # keys per chunk (forward, dQ)
    kth: int  # key tile rows (dK/dV)
    ktw: int  # key tile columns (dK/dV)
    block_q_kv: int  # queries per chunk (dK/dV)
    offset_h: int = 0  # the first key tile starts this many rows before the group (dK/dV)
    offset_w: int = 0  # ... and columns

    def __post_init__(self):
        if not (0 <= self.offset_h < self.kth and 0 <= self.offset_w < self.ktw):
            raise ValueError(f"key tile offsets must be in 0..tile-1: {self}")

    @property
    def block_keys(self) -> int:
        return self.kth * self.ktw


def query_tiles(axis: Axis, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per (group, tile of `size` window starts): its queries and the extent of its key box
    (both 0 for tiles past the end of a short group)."""
    group_len = axis.group_lengths()[:, None]
    starts = group_len - axis.kernel + 1  # window starts in each group
    s0 = np.arange(axis.start_tiles(size))[None, :] * size
    s1 = np.minimum(s0 + size - 1, starts - 1)
    first = np.where(s0 == 0, 0, s0 + axis.kernel // 2)
    last = np.where(s1 == starts - 1, group_len - 1, s1 + axis.kernel // 2)
    inside = s0 < starts
    return np.where(inside, last - first + 1, 0), np.where(inside, s1 - s0 + axis.kernel, 0)


def key_tiles(axis: Axis, tile: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Per (group, tile of `tile` key positions, the first `offset` before the axis): its
    keys and the extent of the box of queries whose windows can hold them (both 0 past the
    end of a short group)."""
    group_len = axis.group_lengths()[:, None]
    start = np.arange(axis.key_tiles(tile, offset))[None, :] * tile - offset
    first = np.maximum(start, 0)
    last = np.minimum(start + tile - 1, group_len - 1)
    k = axis.kernel
    lo = np.where(first - k + 1 <= 0, 0, first - k // 2)
    hi = np.where(last >= group_len - k, group_len - 1, last + k // 2)
    inside = first < group_len
    return np.where(inside, last - first + 1, 0), np.where(inside, hi - lo + 1, 0)


def _chunked(count: np.ndarray, block: int) -> np.ndarray:
    return -(-count // block) * block


def _distinct(counts: np.ndarray, boxes: np.ndarray):
    """The distinct (count, box) tiles of an axis and how often each occurs: interior tiles are
    all alike, so a map of any size has only a handful."""
    pairs, times = np.unique(
        np.stack([counts.reshape(-1), boxes.reshape(-1)], 1), axis=0, return_counts=True
    )
    return pairs[:, 0], pairs[:, 1], times


def _pairwise(h, w, block_a: int, block_b: int) -> int:
    """Scores over all (row tile, column tile) pairs of all groups (h, w: _distinct tiles):
    chunked counts of the tiles' own items times chunked counts of their boxes."""
    n_h, box_h, times_h = h
    n_w, box_w, times_w = w
    items = n_h[:, None] * n_w[None, :]
    box = box_h[:, None] * box_w[None, :]
    times = times_h[:, None] * times_w[None, :]
    return int((_chunked(items, block_a) * _chunked(box, block_b) * times).sum())


def forward_scores(h: Axis, w: Axis, plan: Plan) -> int:
    """Scores the forward (and the dQ) kernel computes for one (batch, head)."""
    return _pairwise(
        _distinct(*query_tiles(h, plan.sh)),
        _distinct(*query_tiles(w, plan.sw)),
        plan.block_q,
        plan.block_k,
    )


def backward_kv_scores(h: Axis, w: Axis, plan: Plan) -> int:
    """Scores the dK/dV kernel recomputes for one (batch, head): every key tile (of
    block_keys slots) times its chunked query box."""
    n_h, box_h, times_h = _distinct(*key_tiles(h, plan.kth, plan.offset_h))
    n_w, box_w, times_w = _distinct(*key_tiles(w, plan.ktw, plan.offset_w))
    tiles = (n_h[:, None] * n_w[None, :]) > 0
    box = box_h[:, None] * box_w[None, :]
    times = times_h[:, None] * times_w[None, :]
    return int((tiles * plan.block_keys * _chunked(box, plan.block_q_kv) * times).sum())


def useful_scores(h: Axis, w: Axis) -> int:
    """Scores of neighborhood attention itself, per (batch, head): tokens x kh x kw."""
    return h.length * w.length * h.kernel * w.kernel


@functools.lru_cache(maxsize=256)
def plan_tiles(h: Axis, w: Axis) -> Plan:
    """The sizes with the fewest computed scores (ties: larger blocks, within the caps above).
    1D problems (a height of 1 with kernel 1) have one start row."""
    one_d = h.length == 1 and h.kernel == 1
    blocks = np.array(BLOCKS)
    columns = {sw: _distinct(*query_tiles(w, sw)) for sw in range(1, MAX_START_RANGE + 1)}
    best_q = None
    for sh in (1,) if one_d else range(1, MAX_START_RANGE + 1):
        n_h, box_h, times_h = _distinct(*query_tiles(h, sh))
        for sw, (n_w, box_w, times_w) in columns.items():
            items = n_h[:, None] * n_w[None, :]
            box = box_h[:, None] * box_w[None, :]
            times = times_h[:, None] * times_w[None, :]
            # scores for every (block_q, block_k) at once: the same sum as forward_scores
            chunked_items = -(-items[None] // blocks[:, None, None]) * blocks[:, None, None]
            chunked_box = -(-box[None] // blocks[:, None, None]) * blocks[:, None, None]
            costs = np.einsum("iab,jab,ab->ij", chunked_items, chunked_box, times)
            for i, block_q in enumerate(BLOCKS):
                for j, block_k in enumerate(BLOCKS):
                    if block_q > MAX_BLOCK_Q or block_q * block_k > MAX_BLOCK_SCORES:
                        continue
                    cost = (int(costs[i, j]), -block_q * block_k)
                    if best_q is None or cost < best_q[0]:
                        best_q = (cost, (sh, sw, block_q, block_k))
    best_kv = None
    for kth, ktw in _KEY_TILES_1D if one_d else _KEY_TILES_2D:
        for offset_h in sorted(h.key_offsets(kth)):
            for offset_w in sorted(w.key_offsets(ktw)):
                for block_q_kv in BLOCKS:
                    if kth * ktw * block_q_kv > MAX_BLOCK_SCORES:
                        continue
                    plan = Plan(*best_q[1], kth, ktw, block_q_kv, offset_h, offset_w)
                    # ties: larger blocks, then no offset
                    cost = (
                        backward_kv_scores(h, w, plan),
                        -kth * ktw * block_q_kv,
                        offset_h + offset_w,
                    )
                    if best_kv is None or cost < best_kv[0]:
                        best_kv = (cost, plan)
    return best_kv[1]


def query_grid(h: Axis, w: Axis, plan: Plan, batch_heads: int) -> tuple[int, int]:
    """Programs of the forward and dQ kernels: (groups x start tiles, batch x heads)."""
    tiles = h.start_tiles(plan.sh) * w.start_tiles(plan.sw)
    return h.dilation * w.dilation * tiles, batch_heads


def key_grid(h: Axis, w: Axis, plan: Plan, batch_heads: int) -> tuple[int, int]:
    """Programs of the dK/dV kernel: (groups x key tiles, batch x heads)."""
    tiles = h.key_tiles(plan.kth, plan.offset_h) * w.key_tiles(plan.ktw, plan.offset_w)
    return h.dilation * w.dilation * tiles, batch_heads
