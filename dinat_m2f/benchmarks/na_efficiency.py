"""Work efficiency of the fused NA kernels, measured without a GPU, on DiNAT's shapes (those of
dinat_m2f/benchmarks/na.py, at 224 / 640 / 1024 inputs):

- useful fraction: the scores neighborhood attention needs (tokens x kh x kw) over the scores a
  kernel computes. For the fused kernels, from the tile plan the launcher uses (fused_plan.py):
  the forward / dQ kernels and the dK/dV kernel. For flex_attention, from its BlockMask on the
  row-major token order (blocks of 128 x 128 scores, each computed whole): built with
  create_block_mask where its dense mask fits in memory, else from the same block table with
  BlockMask.from_kv_blocks (a test checks the two agree);
- the bytes each path keeps for the backward pass (fused: inputs, output and a float32
  log-sum-exp per query; unfused: also the softmax output, tokens x heads x k*k), measured
  with autograd's saved-tensor hooks on fake tensors (no memory is allocated).

    python -m dinat_m2f.benchmarks.na_efficiency [--inputs 224 640 1024] [--dtype float16]
"""

from __future__ import annotations

import argparse

import torch
from torch.multiprocessing.reductions import StorageWeakRef

from dinat_m2f.benchmarks.na import HEAD_DIM, VARIANTS, Shape, dinat_shapes
from dinat_m2f.benchmarks.timing import DTYPES, markdown_header, markdown_row
from dinat_m2f.ops.na import fused_plan
from dinat_m2f.ops.na.reference import flat_windows

FLEX_BLOCK = 128
DENSE_MASK_LIMIT = 8192  # tokens up to which create_block_mask's dense mask is built


def fused_fractions(shape: Shape) -> tuple[float, float, fused_plan.Plan]:
    """Useful fraction of the forward (and dQ) kernel and of the dK/dV kernel."""
    axis = fused_plan.Axis(shape.side, shape.kernel, shape.dilation)
    plan = fused_plan.plan_tiles(axis, axis)
    useful = fused_plan.useful_scores(axis, axis)
    return (
        useful / fused_plan.forward_scores(axis, axis, plan),
        useful / fused_plan.backward_kv_scores(axis, axis, plan),
        plan,
    )


def flex_block_table(side: int, kernel: int, dilation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kv_num_blocks, kv_indices) of flex_attention's block mask for NA on a side x side map:
    the key blocks holding at least one neighbor of some query of each query block."""
    neighbors, _ = flat_windows((side, side), (kernel, kernel), (dilation, dilation))
    tokens = side * side
    blocks = -(-tokens // FLEX_BLOCK)
    query_block = torch.arange(tokens)[:, None] // FLEX_BLOCK
    pairs = torch.unique(query_block * blocks + neighbors // FLEX_BLOCK)
    q_block, kv_block = pairs // blocks, pairs % blocks
    counts = torch.bincount(q_block, minlength=blocks)
    indices = torch.zeros(blocks, blocks, dtype=torch.int32)
    offsets = torch.arange(len(pairs)) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts
    )
    indices[q_block, offsets] = kv_block.to(torch.int32)
    return counts.to(torch.int32)[None, None], indices[None, None]


def flex_block_mask(side: int, kernel: int, dilation: int):
    """flex_attention's BlockMask for NA (see the module docstring for how it is built)."""
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask

    tokens = side * side
    if tokens <= DENSE_MASK_LIMIT:
        from dinat_m2f.benchmarks.na import _window_tables

        inside, _ = _window_tables(side, kernel, dilation, "cpu")

        def mask_mod(b, h, q_idx, kv_idx):
            return inside[q_idx // side, kv_idx // side] & inside[q_idx % side, kv_idx % side]

        return create_block_mask(
            mask_mod, None, None, tokens, tokens, device="cpu", BLOCK_SIZE=FLEX_BLOCK
        )
    counts, indices = flex_block_table(side, kernel, dilation)
    return BlockMask.from_kv_blocks(
        counts, indices, BLOCK_SIZE=FLEX_BLOCK, seq_lengths=(tokens, tokens)
    )


def flex_computed_scores(block_mask) -> int:
    """Scores flex_attention computes: every partial or full block, whole."""
    blocks = int(block_mask.kv_num_blocks.sum())
    if block_mask.full_kv_num_blocks is not None:
        blocks += int(block_mask.full_kv_num_blocks.sum())
    return blocks * FLEX_BLOCK * FLEX_BLOCK


def flex_fraction(shape: Shape) -> float:
    useful = shape.tokens * shape.kernel**2
    return useful / flex_computed_scores(flex_block_mask(shape.side, shape.kernel, shape.dilation))


def saved_for_backward(shape: Shape, backend: str, dtype: torch.dtype, batch: int = 1) -> list[int]:
    """Bytes of each distinct storage autograd keeps for na2d's backward (fake tensors)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from dinat_m2f.layers import na2d

    storages = {}

    def pack(t):
        storages[StorageWeakRef(t.untyped_storage())] = t.untyped_storage().nbytes()
        return t

    with FakeTensorMode():
        dims = (batch, shape.side, shape.side, shape.heads, HEAD_DIM)
        q, k, v = (torch.empty(dims, dtype=dtype).requires_grad_() for _ in range(3))
        rpb = torch.empty(shape.heads, 2 * shape.kernel - 1, 2 * shape.kernel - 1, dtype=dtype)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            na2d(
                q,
                k,
                v,
                shape.kernel,
                dilation=shape.dilation,
                rpb=rpb.requires_grad_(),
                backend=backend,
            )
    return sorted(storages.values())


COLUMNS = (
    "input",
    "model",
    "level",
    "tokens",
    "heads",
    "k",
    "d",
    "fused plan (starts SHxSW, BLOCK_QxBLOCK_K; dK/dV key tile KTHxKTW from (row, col), BLOCK_Q)",
    "useful: fused fwd",
    "fused dK/dV",
    "flex",
    "fused / flex",
    "saved MB: fused",
    "unfused",
    "largest saved by fused / a k*k map",
)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, nargs="+", default=[224, 640, 1024])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--kernels", type=int, nargs="+", default=[7, 11])
    parser.add_argument("--dtype", default="float16", choices=DTYPES)
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    shapes = dinat_shapes(args.inputs, args.variants, [1, 2, 3, 4], args.kernels)
    print(
        f"# Fused NA work efficiency (no GPU needed): useful scores (tokens x k*k) over computed "
        f"scores; saved bytes for the backward, batch 1, {args.dtype}, head dim {HEAD_DIM}; "
        f"flex_attention block {FLEX_BLOCK}"
    )
    print(markdown_header(COLUMNS), flush=True)
    rows = []
    for s in shapes:
        fwd, kv, plan = fused_fractions(s)
        flex = flex_fraction(s)
        fused_saved = saved_for_backward(s, "fused", dtype)
        fused_bytes, unfused_bytes = sum(fused_saved), sum(saved_for_backward(s, "unfused", dtype))
        # the smallest attention-map-sized tensor: tokens x heads x k*k in the inputs' dtype
        k2_bytes = s.tokens * s.heads * s.kernel**2 * torch.finfo(dtype).bits // 8
        row = dict(
            shape=s,
            fused=fwd,
            fused_kv=kv,
            flex=flex,
            fused_bytes=fused_bytes,
            unfused_bytes=unfused_bytes,
            plan=plan,
        )
        rows.append(row)
        print(
            markdown_row(
                (
                    s.input_size,
                    s.variant,
                    s.level,
                    s.tokens,
                    s.heads,
                    s.kernel,
                    s.dilation,
                    f"{plan.sh}x{plan.sw}, {plan.block_q}x{plan.block_k}; {plan.kth}x{plan.ktw} "
                    f"from ({-plan.offset_h}, {-plan.offset_w}), {plan.block_q_kv}",
                    f"{fwd:.3f}",
                    f"{kv:.3f}",
                    f"{flex:.3f}",
                    f"{min(fwd, kv) / flex:.1f}x",
                    f"{fused_bytes / 2**20:.1f}",
                    f"{unfused_bytes / 2**20:.1f}",
                    f"{fused_saved[-1] / k2_bytes:.2f}",
                )
            ),
            flush=True,
        )
        row["largest_fused_over_k2"] = fused_saved[-1] / k2_bytes
    worst = min(min(r["fused"], r["fused_kv"]) / r["flex"] for r in rows)
    largest = max(r["largest_fused_over_k2"] for r in rows)
    print(
        f"# {len(rows)} shapes; fused / flex useful fraction at least {worst:.1f}x on every "
        "shape (the smaller of the forward's and the dK/dV kernel's); the largest tensor the "
        f"fused path saves is at most {largest:.2f} of a k*k attention map"
    )
    return rows


if __name__ == "__main__":
    main()
