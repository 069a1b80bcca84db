"""Benchmark of neighborhood attention on DiNAT's real shapes.

Prints one table row per (input size, model width, level, kernel, dilation, implementation):
forward and forward+backward time (median of repeats, after warm-up, synchronised on GPU) and
peak memory, for

- `native`: our unfused kernels (torch.ops.dinat_m2f: QK, softmax, AV),
- `fused`: our fused Triton kernels (dinat_m2f_triton: online softmax, RPB inside; on CPU
  only under TRITON_INTERPRET=1, which is for testing, not timing),
- `torch`: the pure-PyTorch gather implementation (the fallback),
- `sdpa`: full self attention over the same tokens with scaled_dot_product_attention,
- `flex`: torch flex_attention (compiled) with a neighborhood mask and the RPB as a score mod.

Timing and peak memory: dinat_m2f/benchmarks/timing.py (the allocator's peak on CUDA, the
sampled growth of resident memory on CPU, labelled as an estimate). Achieved TFLOP/s count the
useful work (4 N h k^2 D forward, 12 N h k^2 D forward+backward: QK, AV; dQ, dK, dV, dP) and
GB/s the forward's minimal traffic (read q, k, v, write out); on a GPU whose peaks are known
(PEAKS) the share of the peak is printed too.

    python -m dinat_m2f.benchmarks.na                 # CPU, the full table
    python -m dinat_m2f.benchmarks.na --device cuda   # on a GPU
    python -m dinat_m2f.benchmarks.na --quick         # 224 input, kernel 7 only
    python -m dinat_m2f.benchmarks.na --op ms_deform_attn [--quick]
                                                      # multi-scale deformable attention
                                                      # (dinat_m2f/benchmarks/ms_deform_attn.py)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
from dinat_m2f.layers import na2d, native_backends
from dinat_m2f.ops.na import fused
from dinat_m2f.ops.na.reference import axis_windows, na_av_reference, na_qk_reference

# Widths and the largest dilation per level of the schedules DiNAT uses (docs: dinat-facts).
VARIANTS = {"tiny": (2, 4, 8, 16), "large": (6, 12, 24, 48)}  # heads per level, head dim 32
HEAD_DIM = 32
# the largest dilation per level: ImageNet 224 (k=7), Mask2Former at 640 and 1024 (k=11)
MAX_DILATION = {224: (8, 4, 2, 1), 640: (14, 7, 3, 1), 1024: (14, 7, 3, 1)}
IMPLS = ("native", "fused", "torch", "sdpa", "flex")
# dense fp16/bf16 tensor-core TFLOP/s and memory bandwidth TB/s, by device-name substring
PEAKS = {"H200": (989.0, 4.8), "H100": (989.0, 3.35), "A100": (312.0, 2.0)}


@dataclass(frozen=True)
class Shape:
    input_size: int
    variant: str
    level: int
    side: int
    heads: int
    kernel: int
    dilation: int

    @property
    def tokens(self) -> int:
        return self.side * self.side


def dinat_shapes(inputs, variants, levels, kernels) -> list[Shape]:
    """Level l has side input/4/2^(l-1); dilations 1 and the schedule's largest that fits."""
    shapes = []
    for size in inputs:
        schedule = MAX_DILATION.get(size, MAX_DILATION[224])
        for variant in variants:
            for level in levels:
                side = size // 4 // 2 ** (level - 1)
                heads = VARIANTS[variant][level - 1]
                for kernel in kernels:
                    if side < kernel:
                        continue  # the module pads such maps; nothing to time at the op level
                    largest = min(schedule[level - 1], side // kernel)
                    for dilation in sorted({1, largest}):
                        shapes.append(Shape(size, variant, level, side, heads, kernel, dilation))
    return shapes


# ---------------------------------------------------------------------------------------------
# implementations: each takes (q, k, v, rpb) heads-last and returns the output


def run_native(shape: Shape) -> Callable:
    return lambda q, k, v, rpb: na2d(
        q, k, v, shape.kernel, dilation=shape.dilation, rpb=rpb, backend="unfused"
    )


def run_fused(shape: Shape) -> Callable:
    return lambda q, k, v, rpb: na2d(
        q, k, v, shape.kernel, dilation=shape.dilation, rpb=rpb, backend="fused"
    )


def run_torch(shape: Shape) -> Callable:
    window = (shape.kernel,) * 2, (shape.dilation,) * 2

    def fn(q, k, v, rpb):
        logits = na_qk_reference(q * HEAD_DIM**-0.5, k, rpb, *window)
        attn = torch.softmax(logits.float(), dim=-1).to(q.dtype)
        return na_av_reference(attn, v, *window)

    return fn


def _to_heads_first(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1, 2).transpose(1, 2)  # (B, H, W, heads, D) -> (B, heads, N, D)


def run_sdpa(shape: Shape) -> Callable:
    def fn(q, k, v, rpb):
        out = F.scaled_dot_product_attention(*(_to_heads_first(x) for x in (q, k, v)))
        return out.transpose(1, 2).reshape(q.shape)

    return fn


def _window_tables(
    side: int, kernel: int, dilation: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(side, side) tables from the reference's windows: whether key j is in query i's
    window on an axis, and its bias index there (0 where it is not)."""
    neighbors, bias = axis_windows(side, kernel, dilation, device)
    rows = torch.arange(side, device=device)[:, None]
    inside = torch.zeros(side, side, dtype=torch.bool, device=device)
    inside[rows, neighbors] = True
    bias_table = torch.zeros(side, side, dtype=torch.long, device=device)
    bias_table[rows, neighbors] = bias
    return inside, bias_table


def run_flex(shape: Shape) -> Callable:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    side = shape.side
    compiled = torch.compile(flex_attention, dynamic=False)
    cache = {}

    def fn(q, k, v, rpb):
        if "mask" not in cache:
            inside, bias = _window_tables(side, shape.kernel, shape.dilation, q.device)
            cache["bias"] = bias

            def mask_mod(b, h, q_idx, kv_idx):
                return inside[q_idx // side, kv_idx // side] & inside[q_idx % side, kv_idx % side]

            cache["mask"] = create_block_mask(
                mask_mod, None, None, shape.tokens, shape.tokens, device=q.device.type
            )
        bias = cache["bias"]

        def score_mod(score, b, h, q_idx, kv_idx):
            return (
                score
                + rpb[h, bias[q_idx // side, kv_idx // side], bias[q_idx % side, kv_idx % side]]
            )

        out = compiled(
            *(_to_heads_first(x) for x in (q, k, v)), score_mod=score_mod, block_mask=cache["mask"]
        )
        return out.transpose(1, 2).reshape(q.shape)

    return fn


FACTORIES = {
    "native": run_native,
    "fused": run_fused,
    "torch": run_torch,
    "sdpa": run_sdpa,
    "flex": run_flex,
}


# ---------------------------------------------------------------------------------------------
# measurement (dinat_m2f/benchmarks/timing.py)


def skip_reason(impl: str, shape: Shape, batch: int, args) -> str | None:
    if impl == "native" and torch.device(args.device).type.upper() not in native_backends():
        return "extension not built for this device"
    if impl == "fused":
        probe = torch.empty(
            0,
            shape.side,
            shape.side,
            shape.heads,
            HEAD_DIM,
            dtype=getattr(torch, args.dtype),
            device=args.device,
        )
        reason = fused.unsupported(probe, probe, (shape.kernel, shape.kernel))
        if torch.device(args.device).type == "cpu":
            reason = reason or "the Triton interpreter is for tests, not timing"
        if reason:
            return reason
    if impl in ("sdpa", "flex") and shape.tokens > args.max_dense_tokens:
        return f"{shape.tokens} tokens > --max-dense-tokens {args.max_dense_tokens}"
    if impl == "torch":
        gathered = batch * shape.tokens * shape.kernel**2 * shape.heads * HEAD_DIM * 4
        if gathered > args.max_gather_gb * 2**30:
            return f"gathers {gathered / 2**30:.1f} GB > --max-gather-gb {args.max_gather_gb}"
    return None


def benchmark_row(impl: str, shape: Shape, args) -> dict:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    row = dict(shape=shape, impl=impl, fwd=None, fwdbwd=None, mem=None, note="")
    # peak MB is that of forward+backward, or of the forward alone when backward fails
    reason = skip_reason(impl, shape, args.batch, args)
    if reason:
        row["note"] = "skipped: " + reason
        return row
    g = torch.Generator().manual_seed(0)
    dims = (args.batch, shape.side, shape.side, shape.heads, HEAD_DIM)
    bias_dims = (shape.heads, 2 * shape.kernel - 1, 2 * shape.kernel - 1)
    inputs = [torch.randn(d, generator=g).to(device, dtype) for d in (dims, dims, dims, bias_dims)]
    leaves = [x.clone().requires_grad_() for x in inputs]
    fn = FACTORIES[impl](shape)

    return time_forward_and_backward(row, fn, inputs, leaves, device, args)


TABLE_HEADER = (
    "input",
    "model",
    "level",
    "tokens",
    "heads",
    "k",
    "d",
    "impl",
    "fwd ms",
    "fwd+bwd ms",
    "fwd TFLOP/s",
    "fwd+bwd TFLOP/s",
    "fwd GB/s",
    "peak MB",
    "note",
)


def device_peaks(device: torch.device) -> tuple[float, float] | None:
    """(TFLOP/s, TB/s) of the GPU, when it is one of PEAKS."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAKS.items() if key in name), None)


def throughput(row: dict, batch: int, element_bytes: int, peaks) -> tuple[str, str, str]:
    """Achieved forward and forward+backward TFLOP/s and forward GB/s (with % of peak)."""
    s = row["shape"]
    work = batch * s.tokens * s.heads * s.kernel**2 * HEAD_DIM
    traffic = 4 * batch * s.tokens * s.heads * HEAD_DIM * element_bytes

    def rate(amount, seconds, peak, scale):
        if seconds is None:
            return "-"
        value = amount / seconds / scale
        return f"{value:.1f}" + (f" ({100 * value / peak:.0f}%)" if peak else "")

    flops_peak, bandwidth_peak = peaks or (None, None)
    return (
        rate(4 * work, row["fwd"], flops_peak, 1e12),
        rate(12 * work, row["fwdbwd"], flops_peak, 1e12),
        rate(traffic, row["fwd"], bandwidth_peak and bandwidth_peak * 1e3, 1e9),
    )


def format_row(row: dict, batch: int = 1, element_bytes: int = 4, peaks=None) -> str:
    s = row["shape"]
    mem = "-" if row["mem"] is None else f"{row['mem']:.1f}"
    return markdown_row(
        (
            s.input_size,
            s.variant,
            s.level,
            s.tokens,
            s.heads,
            s.kernel,
            s.dilation,
            row["impl"],
            format_ms(row["fwd"], digits=2),
            format_ms(row["fwdbwd"], digits=2),
            *throughput(row, batch, element_bytes, peaks),
            mem,
            row["note"],
        )
    )


def shape_label(s: Shape) -> str:
    """A shape in two short lines, for the plot's x axis."""
    return f"{s.input_size} {s.variant} L{s.level}\nk{s.kernel} d{s.dilation}"


OPS = ("na", "ms_deform_attn")


def _op_parser(add_help: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=add_help)
    parser.add_argument(
        "--op",
        default="na",
        choices=OPS,
        help="na: this table; ms_deform_attn: the multi-scale deformable "
        "attention table, whose options are in "
        "`python -m dinat_m2f.benchmarks.ms_deform_attn --help`",
    )
    return parser


def parse_args(argv=None):
    parser = _op_parser(add_help=True)
    add_run_arguments(parser)
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--inputs", type=int, nargs="+", default=[224, 1024])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    parser.add_argument("--kernels", type=int, nargs="+", default=[7, 11])
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    parser.add_argument(
        "--max-dense-tokens",
        type=int,
        default=None,
        help="skip sdpa/flex above this many tokens (default: 4096 on CPU, 65536 on CUDA)",
    )
    parser.add_argument(
        "--max-gather-gb",
        type=float,
        default=2.0,
        help="skip the pure-PyTorch path when its gathered keys exceed this",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="224 input, kernel 7 only (overrides --inputs and --kernels)",
    )
    add_plot_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.inputs, args.kernels = [224], [7]
    if args.max_dense_tokens is None:
        args.max_dense_tokens = 65536 if args.device.startswith("cuda") else 4096
    check_run_args(parser, args)
    check_plot_argument(parser, args)
    if any(size < 4 for size in args.inputs):
        parser.error(f"--inputs must be image sizes >= 4, got {args.inputs}")
    if any(k < 3 or k % 2 == 0 for k in args.kernels):
        parser.error(f"--kernels must be odd and >= 3, got {args.kernels}")
    return args


def main(argv=None) -> list[dict]:
    op_args, rest = _op_parser(add_help=False).parse_known_args(argv)
    if op_args.op == "ms_deform_attn":
        from dinat_m2f.benchmarks import ms_deform_attn

        return ms_deform_attn.main(rest)
    args = parse_args(rest)
    device = torch.device(args.device)
    shapes = dinat_shapes(args.inputs, args.variants, args.levels, args.kernels)
    print(f"# Neighborhood attention benchmark: {device_description(device)}")
    print(
        f"# torch {torch.__version__}, dtype {args.dtype}, batch {args.batch}, head dim "
        f"{HEAD_DIM}, median of {args.repeats} after {args.warmup} warm-up; "
        f"native backends: {', '.join(native_backends()) or 'none'}"
    )
    peaks = device_peaks(device)
    print(f"# peak MB: {memory_note(device)}; device peaks (TFLOP/s, TB/s): {peaks or 'unknown'}")
    print(markdown_header(TABLE_HEADER), flush=True)
    element_bytes = torch.finfo(getattr(torch, args.dtype)).bits // 8
    rows = []
    for shape in shapes:  # rows print as they finish, so an interrupted run keeps its rows
        for impl in args.impls:
            rows.append(benchmark_row(impl, shape, args))
            print(format_row(rows[-1], args.batch, element_bytes, peaks), flush=True)
    flops = sum(4 * s.tokens * s.heads * s.kernel**2 * HEAD_DIM * args.batch for s in shapes)
    print(f"# {len(shapes)} shapes; NA forward work summed over shapes: {flops / 1e9:.2f} GFLOP")
    if args.plot:
        title = (
            f"Neighborhood attention, {args.dtype}, batch {args.batch}: "
            f"{device_description(device)}"
        )
        save_plot(op_bars(rows, shape_label), title, args.plot)
    return rows


if __name__ == "__main__":
    main()
