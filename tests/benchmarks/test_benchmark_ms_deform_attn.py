"""The multi-scale deformable attention benchmark runs from the NA benchmark's command line on
a tiny Mask2Former-like configuration and prints its table."""

import pytest
import torch

from dinat_m2f.benchmarks import ms_deform_attn as bench
from dinat_m2f.benchmarks import na
from tests.conftest import requires_native


def test_mask2former_shapes_are_res3_to_res5_of_the_padded_input():
    big, small, odd = bench.mask2former_shapes([1024, 640, 600])
    assert big.levels == ((128, 128), (64, 64), (32, 32)) and big.tokens == 21504
    assert small.levels == ((80, 80), (40, 40), (20, 20)) and small.tokens == 8400
    assert odd.levels == ((76, 76), (38, 38), (19, 19))  # 600 is padded to 608


@requires_native
def test_benchmark_prints_table_from_the_na_command_line(capsys):
    rows = na.main(["--op", "ms_deform_attn", "--inputs", "64", "--repeats", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    assert "# Multi-scale deformable attention benchmark:" in out and "threads" in out
    assert "| input | levels | tokens = queries | heads | points | impl |" in out
    assert "| 64 | 8x8 + 4x4 + 2x2 | 84 | 8 | 4 | native |" in out
    assert "| 64 | 8x8 + 4x4 + 2x2 | 84 | 8 | 4 | torch |" in out
    assert [row["impl"] for row in rows] == ["native", "torch"]
    for row in rows:
        assert row["fwd"] > 0 and row["fwdbwd"] > 0 and row["note"] == "", row


def test_benchmark_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        na.main(["--op", "ms_deform_attn", "--inputs", "16"])
    assert "--inputs must be image sizes >= 32, got [16]" in capsys.readouterr().err


@requires_native
def test_compared_implementations_compute_the_same_attention():
    shape = bench.mask2former_shapes([96])[0]
    inputs = bench.make_inputs(shape, batch=1, device="cpu", dtype=torch.float64)
    locations = inputs[3]
    assert ((locations < 0) | (locations > 1)).any()  # some samples fall off the maps
    torch.testing.assert_close(
        bench.FACTORIES["native"](*inputs),
        bench.FACTORIES["torch"](*inputs),
        rtol=1e-10,
        atol=1e-10,
    )
