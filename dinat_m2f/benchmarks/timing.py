"""Measurement, arguments and table helpers shared by every benchmark (NA, MSDeformAttn,
model, layer): warm-up, device synchronisation, median and inter-quartile range of repeats,
peak memory, the shared command-line arguments (--device, batch, --warmup, --repeats,
--threads, --dtype, --resolution), the device's description and markdown tables.

Peak memory is the growth above what was held before the call: the CUDA allocator's peak on a
GPU, and on the CPU the growth of the process's resident memory sampled every 0.5 ms (an
estimate, which the tables label as such).
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

DTYPES = ("float32", "float16", "bfloat16")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RssSampler:
    """Peak growth of resident memory while active (CPU memory estimate)."""

    def __init__(self, period: float = 0.0005) -> None:
        self.period = period
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        c = libc()
        if c is not None:  # give freed memory back so the baseline is honest
            c.malloc_trim(0)
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


def time_runs(
    fn: Callable[[], object],
    device: torch.device,
    warmup: int,
    repeats: int,
    min_seconds: float = 0.0,
) -> list[float]:
    """Seconds per call of fn in each of `repeats` samples, after `warmup` calls, synchronised.
    With `min_seconds`, one more timed call sets how many calls a sample makes so that it
    lasts about that long: a call of a millisecond or less, timed alone, measures the timer,
    the thread pool's wake-up and the scheduler as much as the call."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    calls = 1
    if min_seconds > 0:
        start = time.perf_counter()
        fn()
        synchronize(device)
        once = time.perf_counter() - start
        calls = max(1, math.ceil(min_seconds / max(once, 1e-9)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - start) / calls)
    return times


# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def libc() -> ctypes.CDLL | None:
    """glibc, or None where there is none."""
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for the process (mallopt: trim only above 1 GiB
    free, and take blocks up to 32 MiB from the heap instead of fresh mappings), so that the
    outputs of a timed call reuse what the last call freed: the assumption that page faults are
    no part of an op's time, as under a caching allocator (CPU torch has none). Otherwise
    whether an output lands on pages the OS must fault in and zero follows malloc's heuristics,
    which change with the sizes and order of every allocation of the call (measured: dropping
    one temporary from the 128 x 128, kernel 7 NA backward added 1,500 page faults per call and
    made it 5% slower, where it was 3% faster with the heap steady). Tensors above 32 MiB are
    still mapped afresh. False where glibc is missing or refuses a setting."""
    c = libc()
    if c is None:
        return False
    trim = c.mallopt(M_TRIM_THRESHOLD, 2**30) == 1
    return c.mallopt(M_MMAP_THRESHOLD, 2**25) == 1 and trim


def median_iqr(times: list[float]) -> tuple[float, float]:
    """(median, inter-quartile range) in seconds; IQR 0 for a single run."""
    if len(times) < 2:
        return times[0], 0.0
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return statistics.median(times), q3 - q1


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Growth of memory during one call of fn above what was held before it."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    with RssSampler() as sampler:
        fn()
    return sampler.megabytes


def measure(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int):
    """(median seconds, peak MB) of `fn`."""
    median, _ = median_iqr(time_runs(fn, device, warmup, repeats))
    return median, peak_memory_mb(fn, device)


def add_run_arguments(
    parser: argparse.ArgumentParser,
    *,
    device: str | None = "cpu",
    batch_flag: str = "--batch",
    threads: bool = False,
) -> None:
    """The arguments every benchmark takes: --device (default `device`; None: cuda if
    available, else cpu), the batch size (`batch_flag`, read as args.batch), --warmup,
    --repeats and, with `threads`, --threads. `check_run_args` checks them."""
    help_device = "cpu or cuda[:i]" + (
        " (default: cuda if available, else cpu)" if device is None else ""
    )
    parser.add_argument("--device", default=device, help=help_device)
    parser.add_argument(batch_flag, dest="batch", type=int, default=1, help="batch size")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs")
    if threads:
        parser.add_argument(
            "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
        )


def check_run_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, batch_flag: str = "--batch"
) -> None:
    """Resolves --device None, then a usage error (exit 2) for --device cuda without a GPU, run
    counts out of range (batch and --repeats >= 1, --warmup >= 0) or --threads < 1."""
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device is available")
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error(
            f"{batch_flag} and --repeats must be >= 1 and --warmup >= 0, got "
            f"{args.batch}, {args.repeats}, {args.warmup}"
        )
    if getattr(args, "threads", None) is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` (when given) inside, restored after, so
    in-process callers keep their setting."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def parse_resolution(text: str) -> tuple[int, int]:
    """--resolution: "512x640" -> (512, 640); "512" -> (512, 512)."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes, default=0) < 1:
        raise argparse.ArgumentTypeError(
            f"--resolution must be HxW or S (positive ints), got {text!r}"
        )
    return sizes[0], sizes[-1]


def time_forward_and_backward(row: dict, fn, inputs, leaves, device, args) -> dict:
    """Fills row["fwd"] (no grad, on `inputs`), row["fwdbwd"] (on `leaves`, which require
    grad) and row["mem"] (of forward+backward, or of the forward alone when backward fails);
    a failure goes to row["note"] instead, so the table goes on."""

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
    """ "<GPU name> (CUDA x.y)" or "<CPU model>, <n> threads"."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def cpu_bfloat16_units(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's bfloat16 arithmetic as cpuinfo's flags name it ("avx512_bf16 amx_bf16"), or
    "none" (then bfloat16 runs by conversion) or "unknown" (no cpuinfo)."""
    try:
        with open(cpuinfo) as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("avx512_bf16", "amx_bf16") if f in flags) or "none"


def memory_note(device: torch.device) -> str:
    """What the tables' peak-memory column means on `device`."""
    if device.type == "cuda":
        return "allocator peak above baseline"
    return "resident-memory growth, sampled (estimate)"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def format_ms(seconds: float | None, iqr: float | None = None, digits: int = 1) -> str:
    """Milliseconds ("-" for none), with "± IQR" when given."""
    if seconds is None:
        return "-"
    text = f"{seconds * 1e3:.{digits}f}"
    return text if iqr is None else f"{text} ± {iqr * 1e3:.{digits}f}"


def markdown_row(cells: Iterable) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown_header(columns: Iterable[str]) -> str:
    columns = list(columns)
    return markdown_row(columns) + "\n|" + "---|" * len(columns)
