"""CPU rate of neighborhood attention against the same machine's matrix multiply.

For every NA / DiNA layer shape of DiNAT, NAT and DiNAT_s (SHAPE_SETS: kernels 7, 11 and 13,
every dilation of the schedules in /work/shared/docs/dinat-facts.md and configs/, head dim 32,
batch 1, float32), with and without RPB, at each thread count: the time of `na2d`'s forward
and forward+backward (the backward of a gradient made once, the inputs' .grad cleared after
each call as zero_grad() clears them between steps: as in training, neither making that
gradient nor adding to old gradients is NA's work), turned into a rate of useful work,

    forward FLOPs          = 2 * 2 * batch * heads * tokens * k^2 * head_dim  (q.k and p.v)
    forward+backward FLOPs = 3 x that                      (the backward counted as 2 x forward)

and the rate of fp32 `torch.mm` on square matrices of the same total FLOPs (n = (FLOPs/2)^(1/3)),
measured right before each shape so that both see the same machine state. Each rate is the
median of --repeats samples, each repeating the call as often as one timed call says makes
about --min-sample-ms (50): the small shapes' calls take well under a millisecond, where one
call alone measures the thread pool's wake-up and the scheduler's noise along with the kernel.
By default (--heap steady) freed memory stays with the process (up to 32 MiB blocks), so each
call's outputs reuse the last call's memory and page faults are no part of the rate; with
glibc's own trimming, whether outputs land on fresh pages the OS must fault in follows the
order and sizes of every allocation, not the kernel. The table prints
both rates and their ratio per shape, and the geometric means. The kernels' layer shapes are
those the module runs: a map smaller than kernel * dilation is padded to it, as
NeighborhoodAttention2D does.

    python -m dinat_m2f.benchmarks.na_cpu                  # every shape, 1 thread and all
    python -m dinat_m2f.benchmarks.na_cpu --quick          # a few shapes
    python -m dinat_m2f.benchmarks.na_cpu --backend unfused  # the qk / softmax / av kernels
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from dinat_m2f.benchmarks.timing import (
    device_description,
    keep_freed_memory,
    load_average,
    markdown_header,
    markdown_row,
    median_iqr,
    time_runs,
)
from dinat_m2f.layers import na2d

HEAD_DIM = 32
CPU = torch.device("cpu")
# heads per level, by width (head dim 32): DiNAT / NAT (Mini as Tiny) and DiNAT_s
HEADS = {
    "T": (2, 4, 8, 16),
    "S": (3, 6, 12, 24),
    "B": (4, 8, 16, 32),
    "L": (6, 12, 24, 48),
    "s-T": (3, 6, 12, 24),
    "s-B": (4, 8, 16, 32),
    "s-L": (6, 12, 24, 48),
}
# (label, input sizes, widths, kernel, dilations per level): the dilations every block of a
# level uses (dinat-facts.md, configs/)
SCHEDULES = (
    ("DiNAT k7 (ImageNet 224)", (224,), ("T", "S", "B", "L"), 7, ({1, 8}, {1, 4}, {1, 2}, {1})),
    ("DiNAT k7 (Mask2Former 512)", (512,), ("T", "S", "B"), 7, ({1, 8}, {1, 4}, {1, 2}, {1})),
    (
        "DiNAT-L k11 (Mask2Former)",
        (640, 1024),
        ("L",),
        11,
        ({1, 14}, {1, 4, 7}, {1, 2, 3}, {1}),
    ),
    ("NAT k7", (224, 512), ("T", "S", "B"), 7, ({1},) * 4),
    ("NAT-L k11", (640,), ("L",), 11, ({1},) * 4),
    ("DiNAT_s k7 (224)", (224,), ("s-T", "s-B", "s-L"), 7, ({1, 8}, {1, 4}, {1, 2}, {1})),
    ("kernel 13 (L widths, 640)", (640,), ("L",), 13, ({1, 8}, {1, 4}, {1, 2}, {1})),
)


@dataclass(frozen=True)
class Shape:
    side: int  # after the module's padding to kernel * dilation
    heads: int
    kernel: int
    dilation: int

    @property
    def tokens(self) -> int:
        return self.side * self.side

    def forward_flops(self, batch: int = 1) -> float:
        return 4.0 * batch * self.heads * self.tokens * self.kernel**2 * HEAD_DIM


@dataclass
class ShapeUse:
    shape: Shape
    uses: list[str] = field(default_factory=list)


def layer_shapes(schedules=SCHEDULES, inputs: Iterable[int] | None = None) -> list[ShapeUse]:
    """Every distinct layer shape of the schedules, with where each occurs ("T 224 L1 d8"),
    largest work first."""
    found: dict[Shape, ShapeUse] = {}
    for _, sizes, widths, kernel, dilations in schedules:
        for size in sizes:
            if inputs is not None and size not in inputs:
                continue
            for width in widths:
                for level, level_dilations in enumerate(dilations):
                    side = size // 4 // 2**level
                    for d in sorted(level_dilations):
                        padded = max(side, kernel * d)
                        shape = Shape(padded, HEADS[width][level], kernel, d)
                        use = found.setdefault(shape, ShapeUse(shape))
                        where = f"{width} {size} L{level + 1}" + (f" d{d}" if d > 1 else "")
                        if where not in use.uses:
                            use.uses.append(where)
    return sorted(found.values(), key=lambda u: -u.shape.forward_flops())


def input_sizes(schedules=SCHEDULES) -> list[int]:
    """The input sizes the schedules measure (--inputs picks among them)."""
    return sorted({size for _, sizes, *_ in schedules for size in sizes})


QUICK = (
    Shape(56, 2, 7, 1),
    Shape(56, 2, 7, 8),
    Shape(28, 4, 7, 4),
    Shape(14, 8, 7, 2),
    Shape(7, 16, 7, 1),
    Shape(160, 6, 11, 14),
    Shape(40, 24, 11, 3),
    Shape(80, 12, 13, 4),
)


# ---------------------------------------------------------------------------------------------
# measurement


@dataclass(frozen=True)
class Timing:
    warmup: int
    repeats: int
    min_seconds: float  # per sample: calls under a millisecond are repeated within one


def _median(fn: Callable[[], object], timing: Timing) -> float:
    median, _ = median_iqr(time_runs(fn, CPU, timing.warmup, timing.repeats, timing.min_seconds))
    return median


def sgemm_rate(flops: float, timing: Timing) -> float:
    """GFLOP/s of torch.mm (fp32) on square matrices with `flops` total work."""
    n = max(8, round((flops / 2) ** (1 / 3)))
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    seconds = _median(lambda: torch.mm(a, b, out=out), timing)
    return 2 * n**3 / seconds / 1e9


@dataclass
class Rates:
    """GFLOP/s of NA and of sgemm of the same work, forward and forward+backward."""

    fwd: float
    fwd_sgemm: float
    fwdbwd: float
    fwdbwd_sgemm: float

    @property
    def fwd_ratio(self) -> float:
        return self.fwd / self.fwd_sgemm

    @property
    def fwdbwd_ratio(self) -> float:
        return self.fwdbwd / self.fwdbwd_sgemm


def na_rates(shape: Shape, rpb: bool, backend: str, timing: Timing) -> Rates:
    g = torch.Generator().manual_seed(0)
    dims = (1, shape.side, shape.side, shape.heads, HEAD_DIM)
    q, k, v = (torch.randn(dims, generator=g) for _ in range(3))
    bias = torch.randn(shape.heads, 2 * shape.kernel - 1, 2 * shape.kernel - 1, generator=g)
    bias = bias if rpb else None
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    bias_leaf = bias.clone().requires_grad_() if rpb else None
    window = dict(dilation=shape.dilation, backend=backend)

    def forward():
        with torch.no_grad():
            na2d(q, k, v, shape.kernel, rpb=bias, **window)

    # what a training step hands NA: an upstream gradient made elsewhere, and leaves whose
    # .grad the optimizer cleared (set to None), so nothing is accumulated into old gradients
    grad = torch.ones(dims)
    grad_leaves = [*leaves, bias_leaf] if rpb else leaves

    def forward_backward():
        out = na2d(*leaves, shape.kernel, rpb=bias_leaf, **window)
        out.backward(grad)
        for leaf in grad_leaves:
            leaf.grad = None

    flops = shape.forward_flops()
    fwd_sgemm = sgemm_rate(flops, timing)
    fwd = flops / _median(forward, timing) / 1e9
    fwdbwd_sgemm = sgemm_rate(3 * flops, timing)
    fwdbwd = 3 * flops / _median(forward_backward, timing) / 1e9
    return Rates(fwd, fwd_sgemm, fwdbwd, fwdbwd_sgemm)


def geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else float("nan")


HEADER = (
    "side",
    "heads",
    "k",
    "d",
    "rpb",
    "fwd GFLOP",
    "sgemm GFLOP/s",
    "fwd GFLOP/s",
    "fwd / sgemm",
    "sgemm 3x GFLOP/s",
    "fwd+bwd GFLOP/s",
    "fwd+bwd / sgemm",
    "layers",
)


def format_row(use: ShapeUse, rpb: bool, r: Rates) -> str:
    s = use.shape
    where = ", ".join(use.uses[:3]) + (f" +{len(use.uses) - 3}" if len(use.uses) > 3 else "")
    return markdown_row(
        (
            s.side,
            s.heads,
            s.kernel,
            s.dilation,
            "yes" if rpb else "no",
            f"{s.forward_flops() / 1e9:.3f}",
            f"{r.fwd_sgemm:.1f}",
            f"{r.fwd:.1f}",
            f"{r.fwd_ratio:.2f}",
            f"{r.fwdbwd_sgemm:.1f}",
            f"{r.fwdbwd:.1f}",
            f"{r.fwdbwd_ratio:.2f}",
            where,
        )
    )


def summary(rates: list[Rates], goals: tuple[float, float]) -> list[str]:
    fwd, fwdbwd = [r.fwd_ratio for r in rates], [r.fwdbwd_ratio for r in rates]
    lines = [
        f"# geometric mean: fwd / sgemm {geomean(fwd):.2f}, fwd+bwd / sgemm {geomean(fwdbwd):.2f}"
        f" (sgemm {geomean([r.fwd_sgemm for r in rates]):.1f} / "
        f"{geomean([r.fwdbwd_sgemm for r in rates]):.1f} GFLOP/s; NA "
        f"{geomean([r.fwd for r in rates]):.1f} / "
        f"{geomean([r.fwdbwd for r in rates]):.1f} GFLOP/s)",
        f"# worst: fwd / sgemm {min(fwd):.2f}, fwd+bwd / sgemm {min(fwdbwd):.2f}; rows at or "
        f"above the goals ({goals[0]:.2f} fwd, {goals[1]:.2f} fwd+bwd): "
        f"{sum(x >= goals[0] for x in fwd)} / {len(fwd)} fwd, "
        f"{sum(x >= goals[1] for x in fwdbwd)} / {len(fwdbwd)} fwd+bwd",
    ]
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="thread counts to run (default: 1 and all of torch.get_num_threads())",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "unfused"],
        help="na2d's backend: auto (the fused CPU kernels) or unfused (qk, softmax, av)",
    )
    parser.add_argument(
        "--inputs", type=int, nargs="+", default=None, help="only these input sizes"
    )
    parser.add_argument("--rpb", choices=["both", "yes", "no"], default="both")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed samples per rate")
    parser.add_argument(
        "--min-sample-ms",
        type=float,
        default=50.0,
        help="each sample repeats the call to last about this long (0: one call)",
    )
    parser.add_argument(
        "--heap",
        choices=["steady", "default"],
        default="steady",
        help="steady: freed memory stays with the process, so outputs reuse it (timing."
        "keep_freed_memory); default: glibc's own trimming, page faults and all",
    )
    parser.add_argument("--quick", action="store_true", help=f"the {len(QUICK)} QUICK shapes")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats}, {args.warmup}")
    if not (math.isfinite(args.min_sample_ms) and args.min_sample_ms >= 0):
        parser.error(f"--min-sample-ms must be finite and >= 0, got {args.min_sample_ms}")
    sizes = input_sizes()
    if args.inputs is not None and not set(args.inputs) <= set(sizes):
        parser.error(
            f"--inputs must be input sizes of the schedules ({', '.join(map(str, sizes))}), "
            f"got {args.inputs}"
        )
    if args.threads is not None and any(t < 1 for t in args.threads):
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv=None) -> dict[int, list[Rates]]:
    args = parse_args(argv)
    all_threads = torch.get_num_threads()
    threads = args.threads or sorted({1, all_threads})
    uses = (
        [ShapeUse(s, ["quick"]) for s in QUICK] if args.quick else layer_shapes(inputs=args.inputs)
    )
    flags = {"both": (True, False), "yes": (True,), "no": (False,)}[args.rpb]
    timing = Timing(args.warmup, args.repeats, args.min_sample_ms / 1000)
    heap = "default"
    if args.heap == "steady":
        heap = "steady (freed memory kept)" if keep_freed_memory() else "default (no mallopt)"
    samples = (
        f"{args.repeats} samples of about {args.min_sample_ms:g} ms"
        if args.min_sample_ms > 0
        else f"{args.repeats} single calls"
    )
    results = {}
    for count in threads:
        torch.set_num_threads(count)
        print(f"# NA on the CPU against sgemm: {device_description(CPU)}; backend {args.backend}")
        print(
            f"# torch {torch.__version__}, float32, batch 1, head dim {HEAD_DIM}; median of "
            f"{samples} after {args.warmup} warm-up; heap {heap}; sgemm on square matrices of "
            "the same "
            f"FLOPs, measured just before each row; load average at start: {load_average()}"
        )
        print(markdown_header(HEADER), flush=True)
        rates = []
        for use in uses:
            for rpb in flags:
                rates.append(na_rates(use.shape, rpb, args.backend, timing))
                print(format_row(use, rpb, rates[-1]), flush=True)
        for line in summary(rates, (0.30, 0.25)):
            print(line)
        print(f"# load average at end: {load_average()}\n", flush=True)
        results[count] = rates
    torch.set_num_threads(all_threads)
    return results


if __name__ == "__main__":
    main()
