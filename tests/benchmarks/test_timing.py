"""timing.time_runs on a fake clock: a call shorter than min_seconds is repeated within each
sample, the sample's time is divided by its calls, and without min_seconds each sample is one
call."""

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
