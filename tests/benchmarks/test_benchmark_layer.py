"""dinat_m2f.benchmarks.layer (also `benchmarks.model --layer`), run in-process at toy
sizes: NAT / DiNAT / Swin rows per level with the dilation each level allows, bad
arguments."""

import pytest

from dinat_m2f.benchmarks import layer as benchmark_layer

from .table_output import ONE_THREAD_RUNS, cpu_name_with_one_thread, table_rows


def test_layer_table(capsys):
    rows = benchmark_layer.main(["--resolution", "64", "--levels", "1", "2", *ONE_THREAD_RUNS])
    out = capsys.readouterr().out
    assert cpu_name_with_one_thread() in out and "kernel = window 7" in out
    table = table_rows(out)
    assert table[0][:3] == ["level", "side", "tokens"]
    assert [(r[0], r[6]) for r in table[1:]] == [
        (level, kind) for level in ("1", "2") for kind in ("NAT", "DiNAT", "Swin")
    ]
    by_kind = {(r["level"], r["kind"]): r for r in rows}
    assert by_kind[1, "DiNAT"]["blocks"] == "NA(d=1) + NA(d=2)"  # 16 // 7
    assert by_kind[2, "DiNAT"]["blocks"] == "NA(d=1) + NA(d=1)"  # 8 // 7
    assert by_kind[1, "Swin"]["fwd_vs_swin"] == 1.0
    assert by_kind[1, "NAT"]["dim"] == 96 and by_kind[2, "NAT"]["heads"] == 6
    assert all(r["fwd"][0] > 0 and r["fwdbwd"][0] > 0 for r in rows)


@pytest.mark.parametrize(
    "argv",
    [
        ["--resolution", "64by64"],
        ["MODEL.DEVICE", "cpu"],
        ["--kernel", "4"],
        ["--repeats", "0"],
        ["--threads", "0"],
    ],
)
def test_bad_arguments_are_reported(argv, capsys):
    with pytest.raises(SystemExit):
        benchmark_layer.main(argv)
    assert "error" in capsys.readouterr().err


def test_shared_run_arguments_name_the_batch_flag(capsys):
    """timing.add_run_arguments / check_run_args, as the op benchmarks use them with --batch."""
    with pytest.raises(SystemExit) as exit_info:
        benchmark_layer.main(["--batch-size", "0", "--warmup", "2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "--batch-size and --repeats must be >= 1 and --warmup >= 0, got 0, 3, 2" in err
