"""The fused kernels' work efficiency (dinat_m2f.benchmarks.na_efficiency): the planner's
score counts against a direct enumeration of the tiles, flex_attention's block mask built
from the block table against create_block_mask, and the targets on every DiNAT shape."""

import dataclasses

import pytest
import torch

from dinat_m2f.benchmarks import na_efficiency as eff
from dinat_m2f.ops.na import fused_plan
from tests.na_brute_force import axis_windows


def enumerated_forward_scores(h_axis, w_axis, plan):
    """Scores of the forward kernel by walking its tiles: for each group and tile of window
    starts, the queries whose window starts fall in it and the keys their windows cover."""

    def tiles(axis, size):
        out = []
        for g in range(axis.dilation):
            members = list(range(g, axis.length, axis.dilation))
            windows = axis_windows(axis.length, axis.kernel, axis.dilation)
            starts = [members.index(windows[i][0][0]) for i in members]  # in-group starts
            for s0 in range(0, max(starts) + 1, size):
                queries = [p for p, s in enumerate(starts) if s0 <= s < s0 + size]
                keys = {starts[p] + j for p in queries for j in range(axis.kernel)}
                out.append((len(queries), len(keys)))
        return out

    total = 0
    for nh, kh in tiles(h_axis, plan.sh):
        for nw, kw in tiles(w_axis, plan.sw):
            chunks_q = -(-nh * nw // plan.block_q)
            chunks_k = -(-kh * kw // plan.block_k)
            total += chunks_q * plan.block_q * chunks_k * plan.block_k
    return total


def enumerated_backward_kv_scores(h_axis, w_axis, plan):
    """Scores of the dK/dV kernel by walking its tiles: for each group and tile of key
    positions (the first starting `offset` before the group), the queries whose windows hold
    any of its keys; every tile computes all its key slots against its query box."""

    def tiles(axis, size, offset):
        out = []
        windows = axis_windows(axis.length, axis.kernel, axis.dilation)
        for g in range(axis.dilation):
            members = list(range(g, axis.length, axis.dilation))
            for start in range(-offset, len(members), size):
                keys = {members[x] for x in range(max(start, 0), min(start + size, len(members)))}
                queries = [i for i in members if keys & set(windows[i][0])]
                out.append((len(keys), len(queries)))
        return out

    total = 0
    for kh, qh in tiles(h_axis, plan.kth, plan.offset_h):
        for kw, qw in tiles(w_axis, plan.ktw, plan.offset_w):
            if kh * kw:
                total += plan.kth * plan.ktw * -(-qh * qw // plan.block_q_kv) * plan.block_q_kv
    return total


@pytest.mark.parametrize(
    "h,w",
    [
        ((15, 7, 2), (14, 7, 2)),
        ((14, 11, 1), (14, 11, 1)),
        ((1, 1, 1), (40, 13, 3)),
        ((30, 5, 4), (9, 3, 1)),
    ],
)
def test_planner_counts_what_the_tiles_compute(h, w):
    h, w = fused_plan.Axis(*h), fused_plan.Axis(*w)
    plan = fused_plan.plan_tiles(h, w)
    assert fused_plan.forward_scores(h, w, plan) == enumerated_forward_scores(h, w, plan)
    assert fused_plan.useful_scores(h, w) <= fused_plan.forward_scores(h, w, plan)
    for offsets in {(plan.offset_h, plan.offset_w), (0, 0), (plan.kth - 1, plan.ktw - 1)}:
        shifted = dataclasses.replace(plan, offset_h=offsets[0], offset_w=offsets[1])
        computed = fused_plan.backward_kv_scores(h, w, shifted)
        assert computed == enumerated_backward_kv_scores(h, w, shifted), offsets
        assert fused_plan.useful_scores(h, w) <= computed


def test_key_tiles_start_where_the_keys_query_sets_change():
    """On a 14-long axis with kernel 11, keys 3..10 are held by every query: 4-key tiles
    starting one position before the axis put them in whole tiles, and the dK/dV kernel then
    computes 74.7% useful scores (64.3% with tiles at multiples of 4)."""
    axis = fused_plan.Axis(14, 11, 1)
    plan = fused_plan.plan_tiles(axis, axis)
    assert (plan.kth, plan.ktw, plan.offset_h, plan.offset_w) == (4, 4, 1, 1)
    useful = fused_plan.useful_scores(axis, axis)
    assert useful / fused_plan.backward_kv_scores(axis, axis, plan) > 0.74
    unshifted = dataclasses.replace(plan, offset_h=0, offset_w=0)
    assert useful / fused_plan.backward_kv_scores(axis, axis, unshifted) < 0.65


@pytest.mark.parametrize("side,kernel,dilation", [(14, 7, 1), (28, 7, 4), (20, 11, 1), (40, 5, 3)])
def test_block_table_equals_create_block_mask(side, kernel, dilation):
    from torch.nn.attention.flex_attention import BlockMask

    dense = eff.flex_block_mask(side, kernel, dilation)  # create_block_mask at these sizes
    counts, indices = eff.flex_block_table(side, kernel, dilation)
    built = BlockMask.from_kv_blocks(
        counts, indices, BLOCK_SIZE=eff.FLEX_BLOCK, seq_lengths=(side * side, side * side)
    )
    assert eff.flex_computed_scores(built) == eff.flex_computed_scores(dense)
    dense_blocks = dense.to_dense()[0, 0].bool()
    assert torch.equal(built.to_dense()[0, 0].bool(), dense_blocks)


def test_targets_on_every_dinat_shape(capsys):
    rows = eff.main([])
    out = capsys.readouterr().out
    assert len(rows) == 80 and "| 1024 | large | 1 | 65536 |" in out
    for r in rows:
        s = r["shape"]
        # the forward (and dQ) kernel computes at least twice flex's useful fraction
        assert r["fused"] >= 2 * r["flex"], (s, r["fused"], r["flex"])
        # and so does the dK/dV kernel
        assert r["fused_kv"] >= 2 * r["flex"], (s, r["fused_kv"], r["flex"])
        # no attention-map-sized tensor is kept for the backward; the unfused path keeps one
        assert r["largest_fused_over_k2"] < 1
        k2 = s.tokens * s.heads * s.kernel**2 * 2
        assert r["unfused_bytes"] >= r["fused_bytes"] + k2
