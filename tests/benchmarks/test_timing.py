"""timing.time_runs on a fake clock: a call shorter than min_seconds is repeated within each
sample, the sample's time is divided by its calls, and without min_seconds each sample is one
call. timing.keep_freed_memory: after it, freeing and allocating again faults in no new pages
(counted by the OS), where blocks mapped afresh fault them in on every round.
timing.cpu_bfloat16_units reads the bfloat16 flags of a cpuinfo file."""

import os
import subprocess
import sys

import pytest
import torch

from dinat_m2f.benchmarks import timing

CPU = torch.device("cpu")


class FakeClock:
    """perf_counter that only moves when the timed function runs: each call costs `cost`."""

    def __init__(self, cost: float) -> None:
        self.now = 0.0
        self.cost = cost
        self.calls = 0

    def perf_counter(self) -> float:
        return self.now

    def fn(self) -> None:
        self.calls += 1
        self.now += self.cost


@pytest.mark.parametrize(
    "cost,min_seconds,calls_per_sample",
    [
        (0.001, 0.0105, 11),  # 10.5 calls' worth: rounded up
        (0.001, 0.0, 1),  # one call per sample, as before
        (0.1, 0.05, 1),  # already longer than the minimum
    ],
)
def test_short_calls_are_repeated_within_a_sample(monkeypatch, cost, min_seconds, calls_per_sample):
    clock = FakeClock(cost)
    monkeypatch.setattr(timing.time, "perf_counter", clock.perf_counter)
    times = timing.time_runs(clock.fn, CPU, warmup=2, repeats=3, min_seconds=min_seconds)
    sizing = 1 if min_seconds > 0 else 0  # the timed call that sets the sample's length
    assert clock.calls == 2 + sizing + 3 * calls_per_sample
    assert times == pytest.approx([cost] * 3)


# Three 8 MiB tensors made and freed per round, on base pages (transparent huge pages off:
# where they are always on, a fault brings in 2 MiB). The control maps each tensor afresh
# (glibc's default for the first blocks of that size, fixed here: its later choices depend on
# what the process allocated before), which faults in every page every round.
ROUNDS = """
import resource, sys, torch
from dinat_m2f.benchmarks import timing
libc = timing.libc()
assert libc.prctl(41, 1, 0, 0, 0) == 0  # PR_SET_THP_DISABLE
if sys.argv[1] == "kept":
    assert timing.keep_freed_memory()
else:
    assert libc.mallopt(timing.M_MMAP_THRESHOLD, 128 * 1024) == 1
def round_():
    xs = [torch.empty(2**21).fill_(1.0) for _ in range(3)]
    del xs
for _ in range(3):
    round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(timing.libc() is None, reason="glibc's mallopt")
def test_kept_memory_is_reused_without_new_page_faults():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def faults(mode):
        result = subprocess.run(
            [sys.executable, "-c", ROUNDS, mode],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        return int(result.stdout.split()[-1])

    pages = 10 * 3 * 2**23 // os.sysconf("SC_PAGE_SIZE")  # every tensor's pages, every round
    assert faults("mapped") > pages // 2  # the fault this guards against, shown happening
    assert faults("kept") < pages // 100


@pytest.mark.parametrize(
    "flags,units",
    [
        ("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "avx512_bf16 amx_bf16"),
        ("fpu avx2 fma avx512f avx512_bf16", "avx512_bf16"),
        ("fpu avx2 fma avx512f avx512_fp16", "none"),
    ],
)
def test_cpu_bfloat16_units_are_read_from_the_flags(tmp_path, flags, units):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
    assert timing.cpu_bfloat16_units(str(cpuinfo)) == units
    assert timing.cpu_bfloat16_units(str(tmp_path / "missing")) == "unknown"
