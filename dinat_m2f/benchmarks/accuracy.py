"""Accuracy table of the device kernels: the largest error, per op and dtype, of the output and
every gradient against the CPU kernels in float64, relative to max(1, max |reference|) (the
measure the CUDA tests bound).

    python -m dinat_m2f.benchmarks.accuracy --device cuda       # a GPU
    # the CUDA kernels on the emulated device (small shapes), a test extension the package
    # never loads: tests/emulated_device.py loads it, then runs this module
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

DTYPES = ("float32", "float16", "bfloat16", "float64")
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


def _errors(fn, inputs, device, dtype, context) -> list[float]:
    """Output and input-gradient errors of fn on (device, dtype) against CPU float64."""

    def run(xs, device, dtype):
        leaves = [
            x.to(device, dtype).requires_grad_() if x.is_floating_point() else x.to(device)
            for x in xs
        ]
        out = fn(*leaves)
        g = torch.Generator().manual_seed(1)
        grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out)
        grads = torch.autograd.grad(out, [x for x in leaves if x.requires_grad], grad_out)
        return [out.detach(), *grads]

    rounded = [x.to(dtype).double() if x.is_floating_point() else x for x in inputs]
    expected = run(rounded, "cpu", torch.float64)
    with context():
        got = run(rounded, device, dtype)
    return [_relative_error(a, b) for a, b in zip(got, expected)]


def na_inputs(spatial, kernel, heads, dim, batch=2):
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(batch, *spatial, heads, dim, generator=g, dtype=torch.float64) for _ in range(3)
    )
    rpb = torch.randn(heads, *(2 * kernel - 1,) * len(spatial), generator=g, dtype=torch.float64)
    return [q, k, v, rpb]


def ms_deform_attn_inputs(levels, heads, dim, points, queries, batch=1):
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor(levels, dtype=torch.int64)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    value = torch.randn(batch, int(sizes.sum()), heads, dim, generator=g, dtype=torch.float64)
    loc = (batch, queries, heads, len(levels), points, 2)
    locations = torch.rand(loc, generator=g, dtype=torch.float64) * 1.2 - 0.1
    weights = torch.rand(loc[:-1], generator=g, dtype=torch.float64)
    return [value, shapes, starts, locations, weights]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "emulated"])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    # RuntimeError naming tests/emulated_device.py unless that loaded the emulated device
    context = contextlib.nullcontext
    if args.device == "emulated":
        context = functools.partial(use_native_library, EMULATED_LIBRARY)
    where = device_description(device) if args.device == "cuda" else "emulated device (CPU)"
    print(f"# Kernel accuracy against CPU float64: {where}; inputs rounded to the dtype first")
    print(markdown_header(("op", "shape", "dtype", "out", "grad 1", "grad 2", "grad 3", "grad 4")))
    rows = []
    for name, spatial, kernel, dilation, heads, dim in NA_SHAPES[args.device]:
        na = na2d if len(spatial) == 2 else na1d

        def fn(q, k, v, rpb, na=na, kernel=kernel, dilation=dilation):
            return na(q, k, v, kernel, dilation=dilation, rpb=rpb)

        for dtype in args.dtypes:
            errors = _errors(
                fn, na_inputs(spatial, kernel, heads, dim), device, getattr(torch, dtype), context
            )
            rows.append(dict(op="na", shape=name, dtype=dtype, errors=errors))
            print(
                markdown_row(("na (q, k, v, rpb)", name, dtype, *(f"{e:.1e}" for e in errors))),
                flush=True,
            )
    for name, levels, heads, dim, points, queries in MS_DEFORM_ATTN_SHAPES[args.device]:
        for dtype in args.dtypes:
            errors = _errors(
                ms_deform_attn,
                ms_deform_attn_inputs(levels, heads, dim, points, queries),
                device,
                getattr(torch, dtype),
                context,
            )
            rows.append(dict(op="ms_deform_attn", shape=name, dtype=dtype, errors=errors))
            print(
                markdown_row(
                    (
                        "ms_deform_attn (value, loc, w)",
                        name,
                        dtype,
                        *(f"{e:.1e}" for e in errors),
                        "",
                    )
                ),
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
