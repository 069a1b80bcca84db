"""Triton kernels of fused neighborhood attention (NA / DiNA) with relative positional bias:
the forward with an online softmax, and the backward in two kernels (dQ and dRPB per query
tile; dK and dV per key tile), both recomputing the scores from the saved log-sum-exp.
Tile shapes and loops: fused_plan.py.

Every problem is 2D (1D runs with a height of 1, kernel 1, dilation 1), heads-last and
contiguous: tensors (batch, height, width, heads, dim), the log-sum-exp and delta
(batch, height, width, heads) in float32. Tiles are in dilation-group coordinates (see
fused_plan.py). Scores are s = scale * <q, k> + rpb[head, key - query + k - 1 per axis];
the softmax runs in base 2 (the saved log-sum-exp is log2 of the sum of 2^(s * log2 e)).
Products take the inputs' dtype (tensor cores for fp16/bf16; `ieee` for fp32) and
accumulate in fp32. DOT_FP32 upcasts the operands first: Triton's interpreter computes
bf16 products wrongly, so interpreter runs on bf16 use it.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
# Problem sizes and tile counts are plain ints, never specialised: Triton would otherwise
# compile a kernel per pattern of sizes equal to 1 or divisible by 16 (dilation 1, map sides,
# head counts), though only the head dims (D, DV) change the code that matters (aligned
# rows). Window-start ranges (SH, SW) are plain ints for the same reason: one binary serves
# every tile plan with the same blocks (tools/kernel_resources.py compiles each).
_SHAPE_ARGS = ("H", "W", "HEADS", "DH", "DW", "TILES_H", "TILES_W", "SH", "SW")


@triton.jit
def _window_start(pos, group_len, kernel: tl.constexpr):
    """First in-group position of the window of the query at in-group position `pos`."""
    return tl.minimum(tl.maximum(pos - kernel // 2, 0), group_len - kernel)


@triton.jit
def _dot(a, b, DOT_FP32: tl.constexpr, IEEE: tl.constexpr):
    if DOT_FP32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    elif IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _tile_of(pid, TILES_H, TILES_W, DW, TILE_H, TILE_W):
    """Group (gh, gw) and first in-group position (h0, w0) of a program's tile."""
    tw = pid % TILES_W
    rest = pid // TILES_W
    th = rest % TILES_H
    group = rest // TILES_H
    return group // DW, group % DW, th * TILE_H, tw * TILE_W


@triton.jit
def _start_tile(s0, group_len, kernel: tl.constexpr, size):
    """Queries (first position, count) of the tile of window starts s0 .. s0 + size - 1 along
    one axis, and its key box (first position, extent); count 0 past the group's end."""
    starts = group_len - kernel + 1
    s1 = tl.minimum(s0 + size - 1, starts - 1)
    first = tl.where(s0 == 0, 0, s0 + kernel // 2)
    last = tl.where(s1 == starts - 1, group_len - 1, s1 + kernel // 2)
    count = tl.where(s0 < starts, last - first + 1, 0)
    return first, count, s0, s1 - s0 + kernel


@triton.jit
def _scores(
    q,
    k,
    pos_h,
    pos_w,
    key_h,
    key_w,
    start_h,
    start_w,
    valid,
    rpb_head,
    scale,
    KH: tl.constexpr,
    KW: tl.constexpr,
    HAS_RPB: tl.constexpr,
    DOT_FP32: tl.constexpr,
    IEEE: tl.constexpr,
):
    """Scores (base-2 logits) of queries (rows) x keys (columns), -inf outside each query's
    window. pos/start: the queries' in-group positions and window starts; key: the keys'."""
    s = _dot(q, tl.trans(k), DOT_FP32, IEEE) * scale
    inside = (
        valid
        & (key_h[None, :] >= start_h[:, None])
        & (key_h[None, :] < start_h[:, None] + KH)
        & (key_w[None, :] >= start_w[:, None])
        & (key_w[None, :] < start_w[:, None] + KW)
    )
    if HAS_RPB:
        bias_h = key_h[None, :] - pos_h[:, None] + (KH - 1)
        bias_w = key_w[None, :] - pos_w[:, None] + (KW - 1)
        s += tl.load(rpb_head + bias_h * (2 * KW - 1) + bias_w, mask=inside, other=0.0).to(
            tl.float32
        )
    return tl.where(inside, s * 1.4426950408889634, float("-inf")), inside


@triton.jit
def _group(bh, gh, gw, H, W, HEADS, DH, DW):
    """Batch, head and the in-group lengths of dilation group (gh, gw)."""
    return bh // HEADS, bh % HEADS, (H - gh + DH - 1) // DH, (W - gw + DW - 1) // DW


@triton.jit
def _token(batch, head, gh, gw, pos_h, pos_w, H, W, HEADS, DH, DW):
    """Row in the (batch * height * width * heads) tokens of in-group positions (pos_h, pos_w)."""
    return ((batch * H + gh + pos_h * DH).to(tl.int64) * W + gw + pos_w * DW) * HEADS + head


@triton.jit
def _load_rows(ptr, token, cols, width, valid):
    """Rows `token` of a (tokens, width) matrix, zero where `valid` is false or past `width`."""
    mask = valid[:, None] & (cols[None, :] < width)
    return tl.load(ptr + token[:, None] * width + cols[None, :], mask=mask, other=0.0)


@triton.jit
def _store_rows(ptr, token, cols, width, valid, value):
    mask = valid[:, None] & (cols[None, :] < width)
    tl.store(
        ptr + token[:, None] * width + cols[None, :], value.to(ptr.dtype.element_ty), mask=mask
    )


@triton.jit
def _box_rows(j, h0, w0, box_w, box_n):
    """In-group positions and validity of entries j of a box (first position (h0, w0), width
    box_w, box_n entries), row-major."""
    return h0 + j // box_w, w0 + j % box_w, j < box_n


@triton.jit
def _query_rows(j, h0, w0, box_w, box_n, len_h, len_w, KH: tl.constexpr, KW: tl.constexpr):
    """Entries j of a box of queries: positions, validity and window starts."""
    pos_h, pos_w, valid = _box_rows(j, h0, w0, box_w, box_n)
    return pos_h, pos_w, valid, _window_start(pos_h, len_h, KH), _window_start(pos_w, len_w, KW)


@triton.jit
def _probs_and_grad(s, inside, lse, delta, do, v, DOT_FP32: tl.constexpr, IEEE: tl.constexpr):
    """Probabilities from the saved log2-sum-exp, and d loss / d (scaled logit + bias)."""
    p = tl.where(inside, tl.exp2(s - lse[:, None]), 0.0)
    dp = _dot(do, tl.trans(v), DOT_FP32, IEEE)
    return p, p * (dp - delta[:, None])


@triton.jit(do_not_specialize=_SHAPE_ARGS)
def na_forward_kernel(
    Q,
    K,
    V,
    RPB,
    OUT,
    LSE,
    H,
    W,
    HEADS,
    D,
    DV,
    DH,
    DW,
    TILES_H,
    TILES_W,
    scale,
    KH: tl.constexpr,
    KW: tl.constexpr,
    SH,
    SW,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    HAS_RPB: tl.constexpr,
    DOT_FP32: tl.constexpr,
    IEEE: tl.constexpr,
):
    gh, gw, s0_h, s0_w = _tile_of(tl.program_id(0), TILES_H, TILES_W, DW, SH, SW)
    batch, head, len_h, len_w = _group(tl.program_id(1), gh, gw, H, W, HEADS, DH, DW)
    # the tile's queries (a rectangle) and the box of keys their windows cover
    first_h, count_h, box_h0, box_h = _start_tile(s0_h, len_h, KH, SH)
    first_w, count_w, box_w0, box_w = _start_tile(s0_w, len_w, KW, SW)
    d = tl.arange(0, BLOCK_D)
    dv = tl.arange(0, BLOCK_DV)
    rpb_head = RPB + head * (2 * KH - 1) * (2 * KW - 1)
    for i0 in range(0, count_h * count_w, BLOCK_Q):
        i = i0 + tl.arange(0, BLOCK_Q)
        pos_h, pos_w, q_valid, start_h, start_w = _query_rows(
            i, first_h, first_w, count_w, count_h * count_w, len_h, len_w, KH, KW
        )
        q_token = _token(batch, head, gh, gw, pos_h, pos_w, H, W, HEADS, DH, DW)
        q = _load_rows(Q, q_token, d, D, q_valid)
        m = tl.full((BLOCK_Q,), float("-inf"), tl.float32)
        row_sum = tl.zeros((BLOCK_Q,), tl.float32)
        acc = tl.zeros((BLOCK_Q, BLOCK_DV), tl.float32)
        for j0 in range(0, box_h * box_w, BLOCK_K):
            j = j0 + tl.arange(0, BLOCK_K)
            key_h, key_w, k_valid = _box_rows(j, box_h0, box_w0, box_w, box_h * box_w)
            k_token = _token(batch, head, gh, gw, key_h, key_w, H, W, HEADS, DH, DW)
            k = _load_rows(K, k_token, d, D, k_valid)
            v = _load_rows(V, k_token, dv, DV, k_valid)
            s, _ = _scores(
                q, k, pos_h, pos_w, key_h, key_w, start_h, start_w,
                q_valid[:, None] & k_valid[None, :], rpb_head, scale,
                KH, KW, HAS_RPB, DOT_FP32, IEEE,
            )  # fmt: skip
            m_new = tl.maximum(m, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m - m_safe)
            p = tl.exp2(s - m_safe[:, None])
            row_sum = row_sum * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, DOT_FP32, IEEE)
            m = m_new
        l_safe = tl.where(row_sum > 0.0, row_sum, 1.0)
        _store_rows(OUT, q_token, dv, DV, q_valid, acc / l_safe[:, None])
        tl.store(LSE + q_token, m + tl.log2(l_safe), mask=q_valid)


@triton.jit(do_not_specialize=_SHAPE_ARGS)
def na_backward_query_kernel(
    Q,
    K,
    V,
    RPB,
    DO,
    LSE,
    DELTA,
    DQ,
    DRPB,
    H,
    W,
    HEADS,
    D,
    DV,
    DH,
    DW,
    TILES_H,
    TILES_W,
    SPLITS,
    scale,
    KH: tl.constexpr,
    KW: tl.constexpr,
    SH,
    SW,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    HAS_RPB: tl.constexpr,
    DOT_FP32: tl.constexpr,
    IEEE: tl.constexpr,
):
    """dQ of a query tile (the forward's tiles), and its share of dRPB, added into
    DRPB[pid % SPLITS, head] in fp32 (the splits spread the atomics over more addresses)."""
    pid = tl.program_id(0)
    gh, gw, s0_h, s0_w = _tile_of(pid, TILES_H, TILES_W, DW, SH, SW)
    batch, head, len_h, len_w = _group(tl.program_id(1), gh, gw, H, W, HEADS, DH, DW)
    first_h, count_h, box_h0, box_h = _start_tile(s0_h, len_h, KH, SH)
    first_w, count_w, box_w0, box_w = _start_tile(s0_w, len_w, KW, SW)
    d = tl.arange(0, BLOCK_D)
    dv = tl.arange(0, BLOCK_DV)
    rpb_head = RPB + head * (2 * KH - 1) * (2 * KW - 1)
    drpb_head = DRPB + ((pid % SPLITS) * HEADS + head) * (2 * KH - 1) * (2 * KW - 1)
    for i0 in range(0, count_h * count_w, BLOCK_Q):
        i = i0 + tl.arange(0, BLOCK_Q)
        pos_h, pos_w, q_valid, start_h, start_w = _query_rows(
            i, first_h, first_w, count_w, count_h * count_w, len_h, len_w, KH, KW
        )
        q_token = _token(batch, head, gh, gw, pos_h, pos_w, H, W, HEADS, DH, DW)
        q = _load_rows(Q, q_token, d, D, q_valid)
        do = _load_rows(DO, q_token, dv, DV, q_valid)
        lse = tl.load(LSE + q_token, mask=q_valid, other=0.0)
        delta = tl.load(DELTA + q_token, mask=q_valid, other=0.0)
        dq = tl.zeros((BLOCK_Q, BLOCK_D), tl.float32)
        for j0 in range(0, box_h * box_w, BLOCK_K):
            j = j0 + tl.arange(0, BLOCK_K)
            key_h, key_w, k_valid = _box_rows(j, box_h0, box_w0, box_w, box_h * box_w)
            k_token = _token(batch, head, gh, gw, key_h, key_w, H, W, HEADS, DH, DW)
            k = _load_rows(K, k_token, d, D, k_valid)
            v = _load_rows(V, k_token, dv, DV, k_valid)
            s, inside = _scores(
                q, k, pos_h, pos_w, key_h, key_w, start_h, start_w,
                q_valid[:, None] & k_valid[None, :], rpb_head, scale,
                KH, KW, HAS_RPB, DOT_FP32, IEEE,
            )  # fmt: skip
            _, ds = _probs_and_grad(s, inside, lse, delta, do, v, DOT_FP32, IEEE)
            dq += _dot(ds.to(k.dtype), k, DOT_FP32, IEEE)
            if HAS_RPB:
                bias_h = key_h[None, :] - pos_h[:, None] + (KH - 1)
                bias_w = key_w[None, :] - pos_w[:, None] + (KW - 1)
                tl.atomic_add(drpb_head + bias_h * (2 * KW - 1) + bias_w, ds, mask=inside)
        _store_rows(DQ, q_token, d, D, q_valid, dq * scale)


@triton.jit(do_not_specialize=_SHAPE_ARGS + ("OFFSET_H", "OFFSET_W"))
def na_backward_key_kernel(
    Q,
    K,
    V,
    RPB,
    DO,
    LSE,
    DELTA,
    DK,
    DV_OUT,
    H,
    W,
    HEADS,
    D,
    DV,
    DH,
    DW,
    TILES_H,
    TILES_W,
    OFFSET_H,
    OFFSET_W,
    scale,
    KH: tl.constexpr,
    KW: tl.constexpr,
    KTH: tl.constexpr,
    KTW: tl.constexpr,
    BLOCK_Q_KV: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    HAS_RPB: tl.constexpr,
    DOT_FP32: tl.constexpr,
    IEEE: tl.constexpr,
):
    """dK and dV of a key tile: iterates over the box of queries whose windows can hold its
    keys (a query at in-group position p has window start clamp(p - k//2, 0, L - k)). Tiles
    start OFFSET_H / OFFSET_W positions before the group (fused_plan.py: the planner lines
    tile edges up with the positions where the keys' sets of queries change)."""
    gh, gw, t_h, t_w = _tile_of(tl.program_id(0), TILES_H, TILES_W, DW, KTH, KTW)
    batch, head, len_h, len_w = _group(tl.program_id(1), gh, gw, H, W, HEADS, DH, DW)
    h0 = t_h - OFFSET_H
    w0 = t_w - OFFSET_W
    key_h, key_w, _ = _box_rows(tl.arange(0, KTH * KTW), h0, w0, KTW, KTH * KTW)
    k_valid = (key_h >= 0) & (key_h < len_h) & (key_w >= 0) & (key_w < len_w)
    # queries whose windows can hold keys of rows first_h..h_last: from the first query whose
    # window reaches first_h to the last one whose window starts at or before h_last
    first_h = tl.maximum(h0, 0)
    first_w = tl.maximum(w0, 0)
    h_last = tl.minimum(h0 + KTH - 1, len_h - 1)
    w_last = tl.minimum(w0 + KTW - 1, len_w - 1)
    qbox_h0 = tl.where(first_h - KH + 1 <= 0, 0, first_h - KH // 2)
    qbox_w0 = tl.where(first_w - KW + 1 <= 0, 0, first_w - KW // 2)
    qbox_h = tl.where(h_last >= len_h - KH, len_h - 1, h_last + KH // 2) + 1 - qbox_h0
    qbox_w = tl.where(w_last >= len_w - KW, len_w - 1, w_last + KW // 2) + 1 - qbox_w0
    qbox_n = tl.where((first_h < len_h) & (first_w < len_w), qbox_h * qbox_w, 0)

    d = tl.arange(0, BLOCK_D)
    dv = tl.arange(0, BLOCK_DV)
    k_token = _token(batch, head, gh, gw, key_h, key_w, H, W, HEADS, DH, DW)
    k = _load_rows(K, k_token, d, D, k_valid)
    v = _load_rows(V, k_token, dv, DV, k_valid)
    rpb_head = RPB + head * (2 * KH - 1) * (2 * KW - 1)

    dk = tl.zeros((KTH * KTW, BLOCK_D), tl.float32)
    dvalue = tl.zeros((KTH * KTW, BLOCK_DV), tl.float32)
    for j0 in range(0, qbox_n, BLOCK_Q_KV):
        j = j0 + tl.arange(0, BLOCK_Q_KV)
        pos_h, pos_w, q_valid, start_h, start_w = _query_rows(
            j, qbox_h0, qbox_w0, qbox_w, qbox_n, len_h, len_w, KH, KW
        )
        q_token = _token(batch, head, gh, gw, pos_h, pos_w, H, W, HEADS, DH, DW)
        q = _load_rows(Q, q_token, d, D, q_valid)
        do = _load_rows(DO, q_token, dv, DV, q_valid)
        lse = tl.load(LSE + q_token, mask=q_valid, other=0.0)
        delta = tl.load(DELTA + q_token, mask=q_valid, other=0.0)
        s, inside = _scores(
            q, k, pos_h, pos_w, key_h, key_w, start_h, start_w,
            q_valid[:, None] & k_valid[None, :], rpb_head, scale,
            KH, KW, HAS_RPB, DOT_FP32, IEEE,
        )  # fmt: skip
        p, ds = _probs_and_grad(s, inside, lse, delta, do, v, DOT_FP32, IEEE)  # (queries, keys)
        dvalue += _dot(tl.trans(p).to(do.dtype), do, DOT_FP32, IEEE)
        dk += _dot(tl.trans(ds).to(q.dtype), q, DOT_FP32, IEEE)
    _store_rows(DK, k_token, d, D, k_valid, dk * scale)
    _store_rows(DV_OUT, k_token, dv, DV, k_valid, dvalue)
