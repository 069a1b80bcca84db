"""The NA benchmark runs on a small selection of DiNAT shapes and prints its table."""

import pytest
import torch

from dinat_m2f.benchmarks import na as bench
from tests.conftest import requires_native

# the 224 input's last level of DiNAT-T, timed once
ONE_SHAPE = ["--quick", "--variants", "tiny", "--levels", "4", "--repeats", "1", "--warmup", "0"]


def test_dinat_shapes_follow_the_schedules():
    shapes = bench.dinat_shapes([224, 1024], ["tiny", "large"], [1, 2, 3, 4], [7, 11])
    by_key = {(s.input_size, s.variant, s.level, s.kernel): s for s in shapes}
    # 224 input: levels of side 56/28/14/7; 7x7 maps cannot hold an 11x11 window
    assert {s.side for s in shapes if s.input_size == 224} == {56, 28, 14, 7}
    assert (224, "tiny", 4, 11) not in by_key
    # the largest dilation is the schedule's, capped so that side // d >= kernel
    dilations = {(s.input_size, s.level, s.kernel): s.dilation for s in shapes if s.dilation > 1}
    assert dilations[(224, 1, 7)] == 8 and dilations[(224, 1, 11)] == 5
    assert dilations[(1024, 1, 11)] == 14 and dilations[(1024, 3, 11)] == 3
    assert all(s.side // s.dilation >= s.kernel for s in shapes)
    assert by_key[(1024, "large", 1, 11)].heads == 6 and by_key[(1024, "large", 1, 11)].side == 256


@requires_native
def test_benchmark_prints_table(capsys):
    rows = bench.main(
        [
            *ONE_SHAPE,
            "--impls",
            "native",
            "torch",
            "sdpa",
        ]
    )
    out = capsys.readouterr().out
    assert "| input | model | level |" in out and "threads" in out
    assert len(rows) == 3
    for row in rows:
        assert row["fwd"] > 0 and row["fwdbwd"] > 0, row
    assert "| 224 | tiny | 4 | 49 | 16 | 7 | 1 | native |" in out


def test_benchmark_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--kernels", "4"])
    assert "--kernels must be odd and >= 3, got [4]" in capsys.readouterr().err


@pytest.mark.parametrize("op", ["na", "ms_deform_attn"])
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repeats", "0"], "--batch and --repeats must be >= 1 and --warmup >= 0, got 1, 0, 1"),
        (["--warmup", "-1"], "--batch and --repeats must be >= 1 and --warmup >= 0, got 1, 3, -1"),
        (["--batch", "0"], "--batch and --repeats must be >= 1 and --warmup >= 0, got 0, 3, 1"),
    ],
)
def test_both_op_benchmarks_refuse_bad_run_counts(op, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--op", op, *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
@pytest.mark.parametrize("op", ["na", "ms_deform_attn"])
def test_both_op_benchmarks_refuse_cuda_without_a_gpu(op, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--op", op, "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "--device cuda: no CUDA device is available" in capsys.readouterr().err


@requires_native
@pytest.mark.parametrize("impl", ["torch", "flex", "fused"])
def test_compared_implementations_compute_neighborhood_attention(impl):
    """The baselines do the same work as ours: same outputs on a DiNAT-like shape."""
    import torch

    shape = bench.Shape(224, "tiny", 3, side=15, heads=2, kernel=5, dilation=2)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 15, 15, 2, bench.HEAD_DIM, generator=g) for _ in range(3))
    rpb = torch.randn(2, 9, 9, generator=g)
    expected = bench.run_native(shape)(q, k, v, rpb)
    torch.testing.assert_close(
        bench.FACTORIES[impl](shape)(q, k, v, rpb), expected, rtol=1e-4, atol=1e-4
    )


@requires_native
def test_fused_row_is_skipped_on_cpu_and_throughput_counts_useful_work(capsys):
    rows = bench.main(
        [
            *ONE_SHAPE,
            "--impls",
            "fused",
        ]
    )
    assert rows[0]["fwd"] is None
    assert "the Triton interpreter is for tests, not timing" in rows[0]["note"]
    shape = bench.Shape(224, "tiny", 1, side=56, heads=2, kernel=7, dilation=1)
    row = dict(shape=shape, fwd=1e-3, fwdbwd=4e-3)
    work = 56 * 56 * 2 * 49 * bench.HEAD_DIM
    fwd, fwdbwd, bandwidth = bench.throughput(row, 1, 2, (100.0, 2.0))
    assert fwd == f"{4 * work / 1e-3 / 1e12:.1f} ({4 * work / 1e-3 / 1e14:.0f}%)"
    assert fwdbwd.startswith(f"{12 * work / 4e-3 / 1e12:.1f} (")
    traffic = 4 * 56 * 56 * 2 * bench.HEAD_DIM * 2
    assert bandwidth == f"{traffic / 1e-3 / 1e9:.1f} ({100 * traffic / 1e-3 / 2e12:.0f}%)"
