"""Layer-level speed: one "layer" of each kind, two blocks on the same channels-last input:
NAT (NA, NA), DiNAT (NA, dilated NA) and torchvision's Swin (window, shifted window), at the
same width, heads, kernel = window and MLP ratio, per level of --resolution. Each row: forward
and forward+backward time (median and inter-quartile range of --repeats runs after --warmup,
synchronised on GPU), their ratio to Swin's at that level, and the peak memory of
forward+backward (growth above what was allocated before the call; timing.py).

    python -m dinat_m2f.benchmarks.layer [--layer-model tiny|large] [--resolution 224]
        [--levels 1 2 3 4] [--kernel 7] [--mlp-ratio 4] [--batch-size 1] [--dtype float32]
        [--warmup 1] [--repeats 3] [--device cpu|cuda] [--threads N]
    (`python -m dinat_m2f.benchmarks.model --layer ...` and tools/benchmark_model.py --layer
    run this too.)
"""

from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

import torch
from torch import nn

from dinat_m2f.benchmarks.plots import add_plot_argument, check_plot_argument, layer_bars, save_plot
from dinat_m2f.benchmarks.timing import (
    DTYPES,
    add_run_arguments,
    check_run_args,
    device_description,
    format_ms,
    intra_op_threads,
    load_average,
    markdown_header,
    markdown_row,
    median_iqr,
    memory_note,
    parse_resolution,
    peak_memory_mb,
    time_runs,
)


class LayerModel(NamedTuple):
    """Width and heads of level 1 (doubling per level; head dim 32)."""

    width: int
    heads: int


# Swin-T / Swin-L widths (NAT / DiNAT blocks take the same width and heads here)
LAYER_MODELS = {"tiny": LayerModel(width=96, heads=3), "large": LayerModel(width=192, heads=6)}


def layer_modules(
    dim: int, heads: int, kernel: int, dilation: int, mlp_ratio: float
) -> dict[str, tuple[str, nn.Module]]:
    """{kind: (blocks, two-block module)} for NAT, DiNAT and Swin at one width."""
    from dinat_m2f.modeling.backbone.dinat import NATBlock
    from dinat_m2f.modeling.backbone.torchvision_swin import swin_blocks

    def na(d):
        return NATBlock(dim, heads, kernel, d, mlp_ratio=mlp_ratio)

    return {
        "NAT": ("NA(d=1) + NA(d=1)", nn.Sequential(na(1), na(1))),
        "DiNAT": (f"NA(d=1) + NA(d={dilation})", nn.Sequential(na(1), na(dilation))),
        "Swin": ("W-MSA + SW-MSA", nn.Sequential(*swin_blocks(dim, heads, kernel, mlp_ratio))),
    }


LAYER_COLUMNS = (
    "level",
    "side",
    "tokens",
    "dim",
    "heads",
    "k",
    "layer",
    "blocks",
    "fwd ms (± IQR)",
    "fwd+bwd ms (± IQR)",
    "fwd / Swin",
    "fwd+bwd / Swin",
    "peak MB",
)


def run_layers(args) -> list[dict]:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model = LAYER_MODELS[args.layer_model]
    height, width = args.resolution
    memory = memory_note(device)
    print(f"# Layer benchmark ({args.layer_model} widths): {device_description(device)}")
    print(
        f"# torch {torch.__version__}, dtype {args.dtype}, batch {args.batch}, input "
        f"{height}x{width} -> level sides /4../32, kernel = window {args.kernel}, MLP ratio "
        f"{args.mlp_ratio}, DiNAT dilation = largest with side // d >= k; median ± IQR of "
        f"{args.repeats} after {args.warmup} warm-up; peak MB (fwd+bwd): {memory}; load "
        f"average at start: {load_average()}"
    )
    print(markdown_header(LAYER_COLUMNS), flush=True)
    rows = []
    for level in args.levels:
        side_h, side_w = (-(-s // 2 ** (level + 1)) for s in (height, width))
        dim, heads = model.width * 2 ** (level - 1), model.heads * 2 ** (level - 1)
        dilation = max(1, min(side_h, side_w) // args.kernel)
        generator = torch.Generator().manual_seed(level)
        x = torch.randn(args.batch, side_h, side_w, dim, generator=generator).to(device, dtype)
        level_rows = []
        for kind, (blocks, module) in layer_modules(
            dim, heads, args.kernel, dilation, args.mlp_ratio
        ).items():
            torch.manual_seed(0)
            module = module.to(device, dtype)
            leaf = x.clone().requires_grad_()

            def forward(module=module, x=x):
                with torch.no_grad():
                    module(x)

            def forward_backward(module=module, leaf=leaf):
                module(leaf).sum().backward()
                module.zero_grad(set_to_none=True)
                leaf.grad = None

            module.eval()  # no dropout / drop path either way; eval for forward-only
            fwd = median_iqr(time_runs(forward, device, args.warmup, args.repeats))
            module.train()
            fwdbwd = median_iqr(time_runs(forward_backward, device, args.warmup, args.repeats))
            mem = peak_memory_mb(forward_backward, device)
            level_rows.append(
                dict(
                    level=level,
                    side=f"{side_h}x{side_w}",
                    tokens=side_h * side_w,
                    dim=dim,
                    heads=heads,
                    kernel=args.kernel,
                    kind=kind,
                    blocks=blocks,
                    fwd=fwd,
                    fwdbwd=fwdbwd,
                    mem=mem,
                )
            )
        swin = next(r for r in level_rows if r["kind"] == "Swin")
        for r in level_rows:
            r["fwd_vs_swin"] = r["fwd"][0] / swin["fwd"][0]
            r["fwdbwd_vs_swin"] = r["fwdbwd"][0] / swin["fwdbwd"][0]
            print(
                markdown_row(
                    (
                        r["level"],
                        r["side"],
                        r["tokens"],
                        r["dim"],
                        r["heads"],
                        r["kernel"],
                        r["kind"],
                        r["blocks"],
                        format_ms(*r["fwd"]),
                        format_ms(*r["fwdbwd"]),
                        f"{r['fwd_vs_swin']:.2f}",
                        f"{r['fwdbwd_vs_swin']:.2f}",
                        f"{r['mem']:.1f}",
                    )
                ),
                flush=True,
            )
        rows.extend(level_rows)
    print(
        f"# x / Swin: time of the row over Swin's at that level (below 1: faster than Swin); "
        f"load average at end: {load_average()}"
    )
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, device=None, batch_flag="--batch-size", threads=True)
    parser.add_argument(
        "--resolution",
        type=parse_resolution,
        default=(224, 224),
        metavar="HxW",
        help="input size; level i has sides / 2**(i+1) (default 224x224)",
    )
    parser.add_argument(
        "--layer-model",
        default="tiny",
        choices=sorted(LAYER_MODELS),
        help="widths: tiny 96/192/384/768 (heads 3..24), large 192.. (6..48)",
    )
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    parser.add_argument("--kernel", type=int, default=7, help="NA kernel = Swin window")
    parser.add_argument("--mlp-ratio", type=float, default=4.0)
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    add_plot_argument(parser)
    args = parser.parse_args(argv)
    check_run_args(parser, args, batch_flag="--batch-size")
    check_plot_argument(parser, args)
    if args.kernel < 3 or args.kernel % 2 == 0:
        parser.error(f"--kernel must be odd and >= 3, got {args.kernel}")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    with intra_op_threads(args.threads):
        rows = run_layers(args)
    if args.plot:
        h, w = args.resolution
        title = f"one layer of each kind, {h}x{w}: {device_description(torch.device(args.device))}"
        save_plot(layer_bars(rows), title, args.plot)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
