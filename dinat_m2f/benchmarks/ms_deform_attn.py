"""Benchmark of multi-scale deformable attention on Mask2Former's pixel-decoder shapes.

Mask2Former's MSDeformAttn encoder attends over the res3..res5 maps (strides 8/16/32) of the
padded input with d_model 256, 8 heads of 32 channels, 4 points per level and every
encoder token as a query. Prints one table row per (input size, implementation): forward
and forward+backward time (median of repeats, after warm-up, synchronised on GPU) and peak
memory, for

- `native`: our kernels (torch.ops.dinat_m2f.ms_deform_attn),
- `torch`: the grid_sample implementation (the fallback, and Mask2Former's CPU path).

Only the op is timed (value, locations and weights are given), not the projections around
it. Timing and peak memory: dinat_m2f/benchmarks/timing.py.

    python -m dinat_m2f.benchmarks.na --op ms_deform_attn          # CPU, 640 and 1024 inputs
    python -m dinat_m2f.benchmarks.na --op ms_deform_attn --quick  # a 320 input only
    python -m dinat_m2f.benchmarks.ms_deform_attn ...              # the same
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from dinat_m2f.benchmarks.plots import (
    add_plot_argument,
    check_plot_argument,
    op_bars,
    save_plot,
)
from dinat_m2f.benchmarks.timing import (
    DTYPES,
    add_run_arguments,
    check_run_args,
    device_description,
    format_ms,
    markdown_header,
    markdown_row,
    memory_note,
    time_forward_and_backward,
)
from dinat_m2f.layers import ms_deform_attn, native_backends
from dinat_m2f.ops.ms_deform_attn.reference import ms_deform_attn_reference

STRIDES = (8, 16, 32)  # res3, res4, res5
HEADS, HEAD_DIM, POINTS = 8, 32, 4
IMPLS = ("native", "torch")
FACTORIES = {"native": ms_deform_attn, "torch": ms_deform_attn_reference}


@dataclass(frozen=True)
class Shape:
    input_size: int
    levels: tuple[tuple[int, int], ...]  # (height, width) per level

    @property
    def tokens(self) -> int:
        return sum(h * w for h, w in self.levels)


def mask2former_shapes(inputs: list[int]) -> list[Shape]:
    """The res3..res5 maps of a square input padded to a multiple of 32 (detectron2's
    size_divisibility for these models)."""
    shapes = []
    for size in inputs:
        padded = -(-size // 32) * 32
        shapes.append(Shape(size, tuple((padded // s, padded // s) for s in STRIDES)))
    return shapes


def make_inputs(shape: Shape, batch: int, device, dtype) -> list[torch.Tensor]:
    """value, spatial_shapes, level_start_index, locations, weights like the encoder's: each
    query's reference point is its own pixel centre, offsets of a few pixels around it (some
    samples fall off the map), softmax weights over levels*points."""
    g = torch.Generator().manual_seed(0)
    spatial_shapes = torch.tensor(shape.levels, dtype=torch.int64)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    centres = []
    for h, w in shape.levels:
        y, x = torch.meshgrid(
            (torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij"
        )
        centres.append(torch.stack([x, y], -1).reshape(-1, 2))
    reference = torch.cat(centres)  # (queries, 2)
    levels = len(shape.levels)
    queries = shape.tokens
    offsets = torch.randn(batch, queries, HEADS, levels, POINTS, 2, generator=g) * 2.0
    normalizer = spatial_shapes.flip(-1).float()  # (W, H)
    locations = reference[None, :, None, None, None] + offsets / normalizer[:, None, :]
    logits = torch.randn(batch, queries, HEADS, levels * POINTS, generator=g)
    weights = logits.softmax(-1).reshape(batch, queries, HEADS, levels, POINTS)
    value = torch.randn(batch, shape.tokens, HEADS, HEAD_DIM, generator=g)
    return [
        value.to(device, dtype),
        spatial_shapes.to(device),
        level_start_index.to(device),
        locations.to(device, dtype),
        weights.to(device, dtype),
    ]


def benchmark_row(impl: str, shape: Shape, args) -> dict:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    row = dict(shape=shape, impl=impl, fwd=None, fwdbwd=None, mem=None, note="")
    if impl == "native" and device.type.upper() not in native_backends("ms_deform_attn"):
        row["note"] = "skipped: extension not built for this device"
        return row
    inputs = make_inputs(shape, args.batch, device, dtype)
    leaves = [x.clone().requires_grad_(x.is_floating_point()) for x in inputs]
    fn = FACTORIES[impl]

    return time_forward_and_backward(row, fn, inputs, leaves, device, args)


TABLE_HEADER = (
    "input",
    "levels",
    "tokens = queries",
    "heads",
    "points",
    "impl",
    "fwd ms",
    "fwd+bwd ms",
    "peak MB",
    "note",
)


def format_row(row: dict) -> str:
    s = row["shape"]
    levels = " + ".join(f"{h}x{w}" for h, w in s.levels)
    mem = "-" if row["mem"] is None else f"{row['mem']:.1f}"
    cells = (
        s.input_size,
        levels,
        s.tokens,
        HEADS,
        POINTS,
        row["impl"],
        format_ms(row["fwd"], digits=2),
        format_ms(row["fwdbwd"], digits=2),
        mem,
        row["note"],
    )
    return markdown_row(cells)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument(
        "--inputs",
        type=int,
        nargs="+",
        default=[640, 1024],
        help="square input sizes (padded to a multiple of 32)",
    )
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    parser.add_argument(
        "--quick", action="store_true", help="a 320 input only (overrides --inputs)"
    )
    add_plot_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.inputs = [320]
    check_run_args(parser, args)
    check_plot_argument(parser, args)
    if any(size < 32 for size in args.inputs):
        parser.error(f"--inputs must be image sizes >= 32, got {args.inputs}")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device(args.device)
    shapes = mask2former_shapes(args.inputs)
    print(f"# Multi-scale deformable attention benchmark: {device_description(device)}")
    print(
        f"# torch {torch.__version__}, dtype {args.dtype}, batch {args.batch}, {HEADS} heads x "
        f"{HEAD_DIM} channels, {POINTS} points, levels at strides {STRIDES}, every token a "
        f"query; median of {args.repeats} after {args.warmup} warm-up; native backends: "
        f"{', '.join(native_backends('ms_deform_attn')) or 'none'}"
    )
    print(f"# peak MB: {memory_note(device)}")
    print(markdown_header(TABLE_HEADER), flush=True)
    rows = []
    for shape in shapes:  # rows print as they finish
        for impl in args.impls:
            rows.append(benchmark_row(impl, shape, args))
            print(format_row(rows[-1]), flush=True)
    samples = sum(s.tokens * HEADS * len(s.levels) * POINTS * args.batch for s in shapes)
    print(
        f"# {len(shapes)} shapes; {samples / 1e6:.1f} M bilinear samples of {HEAD_DIM} "
        "channels per forward, summed over shapes"
    )
    if args.plot:
        title = f"MSDeformAttn, {args.dtype}, batch {args.batch}: {device_description(device)}"
        save_plot(op_bars(rows, lambda s: f"{s.input_size}\n{s.tokens} tokens"), title, args.plot)
    return rows


if __name__ == "__main__":
    main()
