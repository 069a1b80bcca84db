"""Accuracy table of the device kernels: the largest error, per op, backend and dtype, of the
output and every gradient against the CPU kernels in float64, relative to max(1, max
|reference|) (the measure the CUDA tests bound). NA has two device backends: the `.cu`
kernels ("unfused": QK, softmax, AV) and the fused Triton kernels ("fused"; float16, bfloat16
and float32); each row names its backend, none relies on "auto".

    python -m dinat_m2f.benchmarks.accuracy --device cuda       # a GPU
    # the CUDA kernels on the emulated device (small shapes), a test extension the package
    # never loads: tests/emulated_device.py loads it, then runs this module; the fused kernels
    # there run in Triton's interpreter when TRITON_INTERPRET=1 (skipped otherwise)
    python -m tests.emulated_device dinat_m2f.benchmarks.accuracy --device emulated
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import torch

from dinat_m2f.benchmarks.timing import device_description, markdown_header, markdown_row
from dinat_m2f.layers import ms_deform_attn, na1d, na2d
from dinat_m2f.ops.library import use_native_library
from dinat_m2f.ops.na import fused

DTYPES = ("float32", "float16", "bfloat16", "float64")
NA_BACKENDS = ("unfused", "fused")
COLUMNS = ("op", "backend", "shape", "dtype", "out", "grad 1", "grad 2", "grad 3", "grad 4")
EMULATED_LIBRARY = "dinat_m2f_testing"  # the emulated device's ops (tests/emulated_device.py)
# (name, spatial, kernel, dilation, heads, dim)
NA_SHAPES = {
    "cuda": [
        ("DiNAT-T level 1 at 224", (56, 56), 7, 8, 2, 32),
        ("DiNAT-L level 2 at 1024", (64, 64), 11, 5, 12, 32),
        ("2D naive (head dim 16)", (20, 21), 5, 2, 3, 16),
        ("1D", (200,), 7, 3, 4, 32),
    ],
    "emulated": [
        ("2D tiled k3", (9, 10), 3, 1, 2, 32),
        ("2D tiled k7 d2", (15, 14), 7, 2, 1, 64),
        ("2D naive (head dim 16)", (11, 12), 5, 2, 2, 16),
        ("1D", (23,), 5, 3, 2, 32),
    ],
}
# (name, level shapes, heads, dim, points, queries)
MS_DEFORM_ATTN_SHAPES = {
    "cuda": [("Mask2Former 640 encoder", [(80, 80), (40, 40), (20, 20)], 8, 32, 4, 8400)],
    "emulated": [("small pyramid", [(8, 8), (4, 4), (2, 2)], 2, 32, 4, 40)],
}


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return (got.double().cpu() - expected).abs().max().item() / max(
        1.0, expected.abs().max().item()
    )


def _errors(fn, inputs, device, dtype, context, reference=None) -> list[float]:
    """Output and input-gradient errors of fn on (device, dtype) against `reference` (default:
    fn) on the CPU in float64."""

    def run(f, xs, device, dtype):
        leaves = [
            x.to(device, dtype).requires_grad_() if x.is_floating_point() else x.to(device)
            for x in xs
        ]
        out = f(*leaves)
        g = torch.Generator().manual_seed(1)
        grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out)
        grads = torch.autograd.grad(out, [x for x in leaves if x.requires_grad], grad_out)
        return [out.detach(), *grads]

    rounded = [x.to(dtype).double() if x.is_floating_point() else x for x in inputs]
    expected = run(reference or fn, rounded, "cpu", torch.float64)
    with context():
        got = run(fn, rounded, device, dtype)
    return [_relative_error(a, b) for a, b in zip(got, expected)]


def na_inputs(spatial, kernel, heads, dim, batch=2):
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(batch, *spatial, heads, dim, generator=g, dtype=torch.float64) for _ in range(3)
    )
    rpb = torch.randn(heads, *(2 * kernel - 1,) * len(spatial), generator=g, dtype=torch.float64)
    return [q, k, v, rpb]


def off_pixel_edges(
    locations: torch.Tensor, spatial_shapes: torch.Tensor, margin: float = 1e-4
) -> torch.Tensor:
    """`locations` (..., levels, points, 2), normalised (x, y), moved `margin` pixels away from
    the lines where a sampling coordinate (x * W - 0.5, y * H - 0.5) is an integer. There the
    bilinear sample's gradient with respect to its location jumps to the next cell's, and a
    coordinate within rounding of such a line lands on either side depending on the dtype:
    an H200 run saw one of 1.15M sampling coordinates at 37.99999905 pixels, 38.0 in float32,
    whose location gradient differs by 1.2 from float64's, in the CPU kernel as in the GPU's.
    Away from the lines the comparison measures the kernels' arithmetic."""
    size = spatial_shapes.flip(1).to(locations).view(-1, 1, 2)  # (W, H) per level
    coord = locations * size - 0.5
    nearest = coord.round()
    push = torch.where(coord < nearest, -margin, margin)
    coord = torch.where((coord - nearest).abs() < margin, nearest + push, coord)
    return (coord + 0.5) / size


def ms_deform_attn_inputs(levels, heads, dim, points, queries, batch=1):
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor(levels, dtype=torch.int64)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    value = torch.randn(batch, int(sizes.sum()), heads, dim, generator=g, dtype=torch.float64)
    loc = (batch, queries, heads, len(levels), points, 2)
    locations = off_pixel_edges(
        torch.rand(loc, generator=g, dtype=torch.float64) * 1.2 - 0.1, shapes
    )
    weights = torch.rand(loc[:-1], generator=g, dtype=torch.float64)
    return [value, shapes, starts, locations, weights]


def _na_row(name, spatial, kernel, dilation, heads, dim, backend, dtype, device, context) -> dict:
    """One NA row: its errors, or why the backend cannot compute it (`note`)."""
    na = na2d if len(spatial) == 2 else na1d
    inputs = na_inputs(spatial, kernel, heads, dim)
    row = dict(op="na", backend=backend, shape=name, dtype=dtype, errors=None, note="")
    probe = inputs[0].to(device, getattr(torch, dtype))
    reason = (
        fused.unsupported(probe, probe, (kernel,) * len(spatial)) if backend == "fused" else None
    )
    if reason:
        row["note"] = "skipped: " + reason
        return row

    def fn(q, k, v, rpb, backend=backend):
        return na(q, k, v, kernel, dilation=dilation, rpb=rpb, backend=backend)

    # the reference: the CPU kernels in float64
    reference = functools.partial(fn, backend="unfused")
    row["errors"] = _errors(fn, inputs, device, getattr(torch, dtype), context, reference)
    return row


def format_row(row: dict) -> str:
    errors = [f"{e:.1e}" for e in row["errors"]] if row["errors"] else [row["note"]]
    op = "na (q, k, v, rpb)" if row["op"] == "na" else "ms_deform_attn (value, loc, w)"
    cells = (op, row["backend"], row["shape"], row["dtype"], *errors)
    return markdown_row(cells + ("",) * (len(COLUMNS) - len(cells)))


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "emulated"])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--backends", nargs="+", default=list(NA_BACKENDS), choices=NA_BACKENDS)
    parser.add_argument(
        "--max-shapes", type=int, default=None, help="only the first N shapes of each op"
    )
    args = parser.parse_args(argv)
    if args.max_shapes is not None and args.max_shapes < 1:
        parser.error(f"--max-shapes must be >= 1, got {args.max_shapes}")
    shapes = slice(args.max_shapes)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    # RuntimeError naming tests/emulated_device.py unless that loaded the emulated device
    context = contextlib.nullcontext
    if args.device == "emulated":
        context = functools.partial(use_native_library, EMULATED_LIBRARY)
    if args.device == "cuda":
        where = device_description(device)
    else:
        where = "emulated device (CPU) for the .cu kernels, Triton's interpreter for the fused"
    print(f"# Kernel accuracy against CPU float64: {where}; inputs rounded to the dtype first")
    print(markdown_header(COLUMNS))
    rows = []
    for name, spatial, kernel, dilation, heads, dim in NA_SHAPES[args.device][shapes]:
        for backend in args.backends:
            for dtype in args.dtypes:
                if backend == "fused" and getattr(torch, dtype) not in fused.DTYPES:
                    continue  # the fused kernels take no float64 (fused.unsupported)
                row = _na_row(
                    name, spatial, kernel, dilation, heads, dim, backend, dtype, device, context
                )
                rows.append(row)
                print(format_row(row), flush=True)
    for name, levels, heads, dim, points, queries in MS_DEFORM_ATTN_SHAPES[args.device][shapes]:
        for dtype in args.dtypes:
            errors = _errors(
                ms_deform_attn,
                ms_deform_attn_inputs(levels, heads, dim, points, queries),
                device,
                getattr(torch, dtype),
                context,
            )
            row = dict(op="ms_deform_attn", backend="native", shape=name, dtype=dtype)
            rows.append(dict(row, errors=errors, note=""))
            print(format_row(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
