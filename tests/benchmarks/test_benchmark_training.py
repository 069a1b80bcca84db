"""dinat_m2f.benchmarks.training on a tiny built-in dataset, in a subprocess (the dataset root
is read at import): one row per variant in order, the as-filed row at 1.00x, the device named,
the NA backend variable left as it was, the bound row left out with a note where attention
dropout keeps NA from being skipped; bad arguments named."""

import os
import subprocess
import sys

import pytest

from dinat_m2f.benchmarks import training

from .table_output import cpu_name_with_one_thread, table_rows

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = [
    "SOLVER.IMS_PER_BATCH", "2",
    "DATALOADER.NUM_WORKERS", "0",
    "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MAX_SIZE_TRAIN", "96",
    "MODEL.MASK_FORMER.DEC_LAYERS", "2",
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "64",
]  # fmt: skip


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    from dinat_m2f.data.synthetic import generate_builtin_shapes

    root = str(tmp_path_factory.mktemp("shapes"))
    generate_builtin_shapes(root, num_train=6, num_val=2, size=96, seed=0)
    return root


@pytest.mark.parametrize("attn_drop", ["0.0", "0.1"])
def test_table_has_every_variant_against_the_as_filed_one(datasets_root, attn_drop):
    """With attention dropout the NA layers cannot be skipped: only the bound row is left out,
    with a note naming the layers."""
    env = dict(os.environ, DETECTRON2_DATASETS=datasets_root, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["DINAT_M2F_NA_BACKEND"] = "reference"  # the benchmark sets its own and restores it
    code = (
        "import os, sys; from dinat_m2f.benchmarks import training; "
        "rc = training.main(sys.argv[1:]); "
        "assert os.environ['DINAT_M2F_NA_BACKEND'] == 'reference', 'backend not restored'; "
        "sys.exit(rc)"
    )
    args = ["--rounds", "1", "--block", "1", "--warmup", "1", "--threads", "1", *TINY]
    args += ["MODEL.DINAT.ATTN_DROP_RATE", attn_drop]
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert f"# Training step: {cpu_name_with_one_thread()}" in out
    rows = table_rows(out)
    assert rows[0] == [
        "variant", "NA backend", "optimizer step", "loader", "precision", "median s/it",
        "speed-up",
    ]  # fmt: skip
    assert "; bfloat16 units: " in out
    dropout = float(attn_drop) > 0
    expected = [
        [
            name,
            backend,
            "fused" if fused else "per-parameter loop",
            "tuned" if tuned else "torch defaults",
            "float32" if amp is None else f"AMP {str(amp).removeprefix('torch.')}",
        ]
        for name, (backend, fused, tuned, amp) in training.VARIANTS.items()
        if not (dropout and backend == training.SKIPPED)
    ]
    assert [r[:5] for r in rows[1:]] == expected
    assert expected[-1][4] == "AMP bfloat16"
    assert len(expected) == len(training.VARIANTS) - dropout
    note = [line for line in out.splitlines() if line.startswith("# NA skipped (bound):")]
    assert len(note) == 1
    if dropout:
        assert "left out" in note[0] and "MODEL.DINAT.ATTN_DROP_RATE 0" in note[0]
        assert "(p=0.1)" in note[0]
    else:
        assert "left out" not in note[0]
    assert rows[1][6] == "1.00x"
    base = float(rows[1][5])
    for row in rows[1:]:
        median = float(row[5])
        assert median > 0
        assert row[6] == f"{base / median:.2f}x"


@pytest.mark.parametrize(
    "argv,named",
    [
        (["--rounds", "0"], "--rounds must be at least 1, got 0"),
        (["--block", "-2"], "--block must be at least 1, got -2"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["SOLVER.IMS_PER_BATCH"], "KEY VALUE pairs"),
    ],
)
def test_bad_arguments_are_named(argv, named, capsys):
    with pytest.raises(SystemExit) as stop:
        training.parse_args(argv)
    assert stop.value.code == 2
    assert named in capsys.readouterr().err


def test_na_skipped_replaces_the_attention_by_its_value_and_restores_it():
    import torch

    from dinat_m2f.layers.na import na2d

    gen = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(1, 9, 9, 2, 8, generator=gen) for _ in range(3))
    real = na2d(query, key, value, 3, dilation=2)
    assert not torch.allclose(real, value)
    with training.na_skipped():
        skipped = na2d(query, key, value, 3, dilation=2)
    assert torch.equal(skipped, value)
    with pytest.raises(RuntimeError, match="inside"):
        with training.na_skipped():
            raise RuntimeError("inside")
    assert torch.equal(na2d(query, key, value, 3, dilation=2), real)


def test_layers_with_attention_dropout_are_named_as_what_blocks_the_bound():
    from torch import nn

    from dinat_m2f.layers.neighborhood_attention import NeighborhoodAttention2D

    def layer(p):
        return NeighborhoodAttention2D(16, 2, 3, attn_drop=p)

    assert training.skip_blockers(nn.Sequential(layer(0.0), layer(0.0))) == []
    assert training.skip_blockers(nn.Sequential(layer(0.0), layer(0.1))) == ["1 (p=0.1)"]
