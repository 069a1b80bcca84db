"""dinat_m2f.benchmarks.na_cpu: the layer shapes of a schedule (padded as the module pads,
each named where it occurs), a short run's table (one row per shape, FLOPs from the formula,
ratios that are the printed rates' quotients, summary lines from the rows, no gradient left
from one timed call to the next) and bad arguments named."""

import math

import pytest

from dinat_m2f.benchmarks import na_cpu, timing
from dinat_m2f.benchmarks.na_cpu import Shape

from .table_output import table_rows


def test_layer_shapes_pad_small_maps_and_merge_their_uses():
    # T widths (heads 2, 4, 8, 16), kernel 7, level 1 also at dilation 4
    schedule = (("test", (64, 128), ("T",), 7, ({1, 4}, {1}, {1}, {1})),)
    found = {use.shape: use.uses for use in na_cpu.layer_shapes(schedule)}
    assert found == {
        # input 64: maps 16, 8, 4, 2; 16 < 7 x 4 and 4, 2 < 7 are padded
        Shape(16, 2, 7, 1): ["T 64 L1"],
        Shape(28, 2, 7, 4): ["T 64 L1 d4"],
        Shape(8, 4, 7, 1): ["T 64 L2"],
        Shape(7, 8, 7, 1): ["T 64 L3"],
        # input 128: maps 32, 16, 8, 4
        Shape(32, 2, 7, 1): ["T 128 L1"],
        Shape(32, 2, 7, 4): ["T 128 L1 d4"],
        Shape(16, 4, 7, 1): ["T 128 L2"],
        Shape(8, 8, 7, 1): ["T 128 L3"],
        Shape(7, 16, 7, 1): ["T 64 L4", "T 128 L4"],  # one shape, two uses
    }
    flops = [use.shape.forward_flops() for use in na_cpu.layer_shapes(schedule)]
    assert flops == sorted(flops, reverse=True)


def test_the_released_schedules_include_the_paper_shapes():
    found = {use.shape: use.uses for use in na_cpu.layer_shapes(inputs=[224])}
    # DiNAT-T at 224: 56 x 56 maps, 2 heads, dilation 8 on level 1 (dinat-facts.md)
    assert "T 224 L1 d8" in found[Shape(56, 2, 7, 8)]
    # the L-width 7 x 7 level 4 of DiNAT and DiNAT_s: one shape
    assert found[Shape(7, 48, 7, 1)] == ["L 224 L4", "s-L 224 L4"]
    # every map at least kernel x dilation, as the module pads it
    shapes = [use.shape for use in na_cpu.layer_shapes()]
    assert all(s.side >= s.kernel * s.dilation for s in shapes)


def test_table_rows_are_the_measured_rates_and_their_ratios(capsys, monkeypatch):
    samples = []  # the min_seconds of every timing, NA and sgemm

    def time_runs(fn, device, warmup, repeats, min_seconds=0.0):
        samples.append(min_seconds)
        return timing.time_runs(fn, device, warmup, repeats, min_seconds)

    calls = []  # whether the inputs came with gradients left from an earlier call

    def na2d(*args, **kwargs):
        leaves = [x for x in (*args[:3], kwargs.get("rpb")) if x is not None and x.requires_grad]
        calls.append(any(x.grad is not None for x in leaves))
        return na_cpu_na2d(*args, **kwargs)

    na_cpu_na2d = na_cpu.na2d
    monkeypatch.setattr(na_cpu, "time_runs", time_runs)
    monkeypatch.setattr(na_cpu, "na2d", na2d)
    # the header's claim only: mallopt would change this whole pytest process's heap
    monkeypatch.setattr(na_cpu, "keep_freed_memory", lambda: calls.append("heap") or True)
    argv = ["--quick", "--threads", "1", "--rpb", "yes", "--warmup", "0", "--repeats", "1"]
    results = na_cpu.main([*argv, "--min-sample-ms", "2"])
    out = capsys.readouterr().out
    assert samples == [0.002] * 4 * len(na_cpu.QUICK)
    assert calls[0] == "heap" and len(calls) > 2 * len(na_cpu.QUICK)
    assert not any(calls[1:]), "a timed call added to old gradients"
    header = "median of 1 samples of about 2 ms after 0 warm-up; heap steady (freed memory kept);"
    assert header in out
    rows = table_rows(out)
    assert tuple(rows[0]) == na_cpu.HEADER
    rows = rows[1:]
    rates = results[1]
    assert len(rows) == len(rates) == len(na_cpu.QUICK)
    for row, shape, r in zip(rows, na_cpu.QUICK, rates):
        side, heads, k, d = shape.side, shape.heads, shape.kernel, shape.dilation
        assert row[:5] == [str(side), str(heads), str(k), str(d), "yes"]
        # q.k and p.v: 2 FLOPs per multiply-add, k^2 neighbours, head dim 32
        assert row[5] == f"{2 * 2 * heads * side * side * k * k * 32 / 1e9:.3f}"
        assert row[6:8] == [f"{r.fwd_sgemm:.1f}", f"{r.fwd:.1f}"]
        assert row[9:11] == [f"{r.fwdbwd_sgemm:.1f}", f"{r.fwdbwd:.1f}"]
        assert row[8] == f"{r.fwd / r.fwd_sgemm:.2f}"
        assert row[11] == f"{r.fwdbwd / r.fwdbwd_sgemm:.2f}"
        assert all(x > 0 for x in (r.fwd, r.fwd_sgemm, r.fwdbwd, r.fwdbwd_sgemm))
    fwd = [r.fwd / r.fwd_sgemm for r in rates]
    fwdbwd = [r.fwdbwd / r.fwdbwd_sgemm for r in rates]
    mean = math.prod(fwd) ** (1 / len(fwd)), math.prod(fwdbwd) ** (1 / len(fwdbwd))
    assert f"# geometric mean: fwd / sgemm {mean[0]:.2f}, fwd+bwd / sgemm {mean[1]:.2f}" in out
    at_goal = sum(x >= 0.30 for x in fwd), sum(x >= 0.25 for x in fwdbwd)
    assert f"{at_goal[0]} / {len(fwd)} fwd, {at_goal[1]} / {len(fwd)} fwd+bwd" in out


@pytest.mark.parametrize(
    "argv,named",
    [
        (["--min-sample-ms", "-1"], "--min-sample-ms must be finite and >= 0, got -1.0"),
        (["--min-sample-ms", "nan"], "--min-sample-ms must be finite and >= 0, got nan"),
        (["--min-sample-ms", "inf"], "--min-sample-ms must be finite and >= 0, got inf"),
        (["--repeats", "0"], "--repeats must be >= 1"),
        (["--threads", "0"], "--threads must be >= 1, got [0]"),
        (
            ["--inputs", "7", "512"],
            "--inputs must be input sizes of the schedules (224, 512, 640, 1024), got [7, 512]",
        ),
    ],
)
def test_bad_arguments_are_named(argv, named, capsys):
    with pytest.raises(SystemExit) as stop:
        na_cpu.parse_args(argv)
    assert stop.value.code == 2
    assert named in capsys.readouterr().err
