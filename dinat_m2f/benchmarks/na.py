"""Benchmark of neighborhood attention on DiNAT's real shapes.

Prints one table row per (input size, model width, level, kernel, dilation, implementation):
forward and forward+backward time (median of repeats, after warm-up, synchronised on GPU) and
peak memory, for

- `native`: our kernels (torch.ops.dinat_m2f),
- `torch`: the pure-PyTorch gather implementation (the fallback),
- `sdpa`: full self attention over the same tokens with scaled_dot_product_attention,
- `flex`: torch flex_attention (compiled) with a neighborhood mask and the RPB as a score mod.

Peak memory is the allocator's peak on CUDA; on CPU it is the growth of the process's
resident memory sampled every 0.5 ms during the call (an estimate, labelled as such).

    python -m dinat_m2f.benchmarks.na                 # CPU, the full table
    python -m dinat_m2f.benchmarks.na --device cuda   # on a GPU
    python -m dinat_m2f.benchmarks.na --quick         # 224 input, kernel 7 only
    python -m dinat_m2f.benchmarks.na --op ms_deform_attn [--quick]
                                                      # multi-scale deformable attention
                                                      # (dinat_m2f/benchmarks/ms_deform_attn.py)
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dinat_m2f.layers import na2d, native_backends
from dinat_m2f.layers.na_reference import axis_windows, na_av_reference, na_qk_reference

# Widths and the largest dilation per level of the schedules DiNAT uses (docs: dinat-facts).
VARIANTS = {"tiny": (2, 4, 8, 16), "large": (6, 12, 24, 48)}  # heads per level, head dim 32
HEAD_DIM = 32
MAX_DILATION = {224: (8, 4, 2, 1), 1024: (14, 7, 3, 1)}  # ImageNet k=7 / Mask2Former k=11
IMPLS = ("native", "torch", "sdpa", "flex")


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
    return lambda q, k, v, rpb: na2d(q, k, v, shape.kernel, shape.dilation, rpb)


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


def _window_tables(side: int, kernel: int, dilation: int, device) -> tuple[torch.Tensor, torch.Tensor]:
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
            return score + rpb[h, bias[q_idx // side, kv_idx // side], bias[q_idx % side, kv_idx % side]]

        out = compiled(
            *(_to_heads_first(x) for x in (q, k, v)), score_mod=score_mod, block_mask=cache["mask"]
        )
        return out.transpose(1, 2).reshape(q.shape)

    return fn


FACTORIES = {"native": run_native, "torch": run_torch, "sdpa": run_sdpa, "flex": run_flex}


# ---------------------------------------------------------------------------------------------
# measurement


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _RssSampler:
    """Peak growth of resident memory while active (CPU memory estimate)."""

    def __init__(self, period: float = 0.0005) -> None:
        self.period = period
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        try:  # give freed memory back so the baseline is honest
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.period)

    def __exit__(self, *exc) -> None:
        self.peak = max(self.peak, self._rss())
        self._stop.set()
        self._thread.join()

    @property
    def megabytes(self) -> float:
        return (self.peak - self.base) / 2**20


def measure(fn: Callable[[], None], device: torch.device, warmup: int, repeats: int):
    """(median seconds, peak MB) of `fn`."""
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        with _RssSampler() as sampler:
            fn()
        peak = sampler.megabytes
    return statistics.median(times), peak


def skip_reason(impl: str, shape: Shape, batch: int, args) -> str | None:
    if impl == "native" and torch.device(args.device).type.upper() not in native_backends():
        return "extension not built for this device"
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


def time_forward_and_backward(row: dict, fn, inputs, leaves, device, args) -> dict:
    """Fills row["fwd"] (no grad, on `inputs`), row["fwdbwd"] (on `leaves`, which require
    grad) and row["mem"]; a failure goes to row["note"] instead, so the table goes on."""

    def forward():
        with torch.no_grad():
            fn(*inputs)

    def forward_backward():
        out = fn(*leaves)
        out.backward(torch.ones_like(out))
        for x in leaves:
            x.grad = None

    try:
        row["fwd"], row["mem"] = measure(forward, device, args.warmup, args.repeats)
        row["fwdbwd"], row["mem"] = measure(forward_backward, device, args.warmup, args.repeats)
    except Exception as error:
        stage = "forward" if row["fwd"] is None else "backward"
        first_sentence = str(error).splitlines()[0].split(". ")[0][:80]
        row["note"] = f"{stage} failed: {type(error).__name__}: {first_sentence}"
    return row


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {torch.get_num_threads()} threads"


TABLE_HEADER = ("input", "model", "level", "tokens", "heads", "k", "d", "impl",
                "fwd ms", "fwd+bwd ms", "peak MB", "note")


def format_header() -> str:
    return "| " + " | ".join(TABLE_HEADER) + " |\n|" + "---|" * len(TABLE_HEADER)


def format_row(row: dict) -> str:
    def ms(seconds):
        return "-" if seconds is None else f"{seconds * 1e3:.2f}"

    s = row["shape"]
    mem = "-" if row["mem"] is None else f"{row['mem']:.1f}"
    cells = (s.input_size, s.variant, s.level, s.tokens, s.heads, s.kernel, s.dilation,
             row["impl"], ms(row["fwd"]), ms(row["fwdbwd"]), mem, row["note"])
    return "| " + " | ".join(str(c) for c in cells) + " |"


OPS = ("na", "ms_deform_attn")


def _op_parser(add_help: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=add_help)
    parser.add_argument("--op", default="na", choices=OPS,
                        help="na: this table; ms_deform_attn: the multi-scale deformable "
                             "attention table, whose options are in "
                             "`python -m dinat_m2f.benchmarks.ms_deform_attn --help`")
    return parser


def parse_args(argv=None):
    parser = _op_parser(add_help=True)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--inputs", type=int, nargs="+", default=[224, 1024])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    parser.add_argument("--kernels", type=int, nargs="+", default=[7, 11])
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-dense-tokens", type=int, default=None,
                        help="skip sdpa/flex above this many tokens (default: 4096 on CPU, "
                             "65536 on CUDA)")
    parser.add_argument("--max-gather-gb", type=float, default=2.0,
                        help="skip the pure-PyTorch path when its gathered keys exceed this")
    parser.add_argument("--quick", action="store_true",
                        help="224 input, kernel 7 only (overrides --inputs and --kernels)")
    args = parser.parse_args(argv)
    if args.quick:
        args.inputs, args.kernels = [224], [7]
    if args.max_dense_tokens is None:
        args.max_dense_tokens = 65536 if args.device.startswith("cuda") else 4096
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device is available")
    if any(size < 4 for size in args.inputs):
        parser.error(f"--inputs must be image sizes >= 4, got {args.inputs}")
    if any(k < 3 or k % 2 == 0 for k in args.kernels):
        parser.error(f"--kernels must be odd and >= 3, got {args.kernels}")
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error(f"--batch and --repeats must be >= 1 and --warmup >= 0, got "
                     f"{args.batch}, {args.repeats}, {args.warmup}")
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
    print(f"# torch {torch.__version__}, dtype {args.dtype}, batch {args.batch}, head dim "
          f"{HEAD_DIM}, median of {args.repeats} after {args.warmup} warm-up; "
          f"native backends: {', '.join(native_backends()) or 'none'}")
    print(f"# peak MB: {'allocator peak' if device.type == 'cuda' else 'resident-memory growth (estimate)'}")
    print(format_header(), flush=True)
    rows = []
    for shape in shapes:  # rows print as they finish, so an interrupted run keeps its rows
        for impl in args.impls:
            rows.append(benchmark_row(impl, shape, args))
            print(format_row(rows[-1]), flush=True)
    flops = sum(4 * s.tokens * s.heads * s.kernel**2 * HEAD_DIM * args.batch for s in shapes)
    print(f"# {len(shapes)} shapes; NA forward work summed over shapes: {flops / 1e9:.2f} GFLOP")
    return rows


if __name__ == "__main__":
    main()
