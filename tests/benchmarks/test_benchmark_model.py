"""dinat_m2f.benchmarks.model (tools/benchmark_model.py), run in-process at toy sizes: the
model table (one row per config, NAT twins, the device named), backbone-only timing with
GFLOPs, bad arguments (--layer ones reach the layer benchmark)."""

import pytest
import torch

from dinat_m2f.benchmarks import model as benchmark_model

from .table_output import ONE_THREAD_RUNS, cpu_name_with_one_thread, table_rows

DINAT_MINI = "configs/builtin/maskformer2_dinat_mini_builtin_shapes.yaml"
SWIN_TINY = (
    "configs/ade20k/semantic-segmentation/swin/maskformer2_tvswin_tiny_bs16_160k_res512.yaml"
)
# a small Mask2Former head for both configs
SMALL_HEAD = [
    "MODEL.SEM_SEG_HEAD.CONVS_DIM",
    "32",
    "MODEL.SEM_SEG_HEAD.MASK_DIM",
    "32",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS",
    "1",
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD",
    "64",
    "MODEL.MASK_FORMER.HIDDEN_DIM",
    "32",
    "MODEL.MASK_FORMER.NHEADS",
    "4",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD",
    "64",
    "MODEL.MASK_FORMER.DEC_LAYERS",
    "2",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES",
    "6",
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS",
    "256",
]
TOY = ["--resolution", "64x96", *ONE_THREAD_RUNS]


def test_model_table_compares_configs_with_a_nat_twin(capsys):
    threads = torch.get_num_threads()
    rows = benchmark_model.main(["--configs", DINAT_MINI, SWIN_TINY, "--nat", *TOY, *SMALL_HEAD])
    out = capsys.readouterr().out
    assert torch.get_num_threads() == threads  # --threads is undone on return
    assert cpu_name_with_one_thread() in out
    assert "input 64x96, batch 1, median ± IQR of 2 after 1 warm-up" in out
    table = table_rows(out)
    assert table[0][:3] == ["config", "backbone", "params M"]
    names = [r[0] for r in table[1:]]
    assert names == [
        "maskformer2_dinat_mini_builtin_shapes",
        "maskformer2_dinat_mini_builtin_shapes (NAT)",
        "maskformer2_tvswin_tiny_bs16_160k_res512",
    ]
    labels = [r["backbone"] for r in rows]
    assert labels[0].startswith("DiNAT-mini k7 (d <= ")  # the largest dilation of the file
    assert labels[1:] == ["NAT-mini k7", "Swin swin_t w7"]
    for row in rows:
        assert row["note"] == ""
        assert row["fwd"] > 0 and row["train"] > 0 and row["imgs"] == pytest.approx(1 / row["fwd"])
        assert row["fwd_mem"] is not None and row["train_mem"] is not None
    assert rows[0]["params"] == rows[1]["params"]  # dilations hold no weights
    assert 25 < rows[2]["params"] < 35  # Swin-T's 27.5 M + the small head


def test_backbone_only_inference_with_flops(capsys):
    rows = benchmark_model.main(
        ["--config-file", SWIN_TINY, "--backbone-only", "--skip-train", "--flops", *TOY]
    )
    out = capsys.readouterr().out
    assert "(backbone only)" in out
    (row,) = rows
    assert row["train"] is None and row["fwd"] > 0
    assert row["params"] == pytest.approx(27.53, abs=0.02)  # features + the four output norms
    assert 0.1 < row["gflops"] < 1.0  # Swin-T: 4.5 GFLOPs at 224 x 224, here 64 x 96 (~1/8)


@pytest.mark.parametrize("interleave", [True, False])
def test_interleave_times_the_configs_in_turns(interleave, capsys, monkeypatch):
    """With --interleave every round runs each model once (after each one's warm-up, before
    each one's memory run); without it each config's runs come in one block."""
    calls = []
    real_build = benchmark_model.build

    def build(cfg, backbone_only):
        model = real_build(cfg, backbone_only)
        name = cfg.MODEL.BACKBONE.NAME
        model.register_forward_pre_hook(lambda module, args: calls.append(name))
        return model

    monkeypatch.setattr(benchmark_model, "build", build)
    flags = ["--skip-train", "--interleave"] if interleave else ["--skip-train"]
    rows = benchmark_model.main(["--configs", DINAT_MINI, SWIN_TINY, *flags, *TOY, *SMALL_HEAD])
    out = capsys.readouterr().out
    dinat, swin = "D2DiNAT", "D2TorchvisionSwin"
    if interleave:
        assert calls == [dinat, swin] * 4  # warm-up, 2 timed rounds, memory
        assert "each round one run of every config in turn" in out
    else:
        assert calls == [dinat] * 4 + [swin] * 4
    assert [r["config"] for r in rows] == [
        "maskformer2_dinat_mini_builtin_shapes",
        "maskformer2_tvswin_tiny_bs16_160k_res512",
    ]
    for row in rows:
        assert row["fwd"] > 0 and row["fwd_mem"] is not None and row["train"] is None


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--configs", DINAT_MINI, "MODEL.DEVICE"],
        ["--configs", "missing.yaml"],
        ["--configs", DINAT_MINI, "--batch-size", "0"],
        ["--configs", DINAT_MINI, "--interleave"],
        ["--configs", DINAT_MINI, "--interleave", "--skip-train", "--keep-going"],
    ],
)
def test_bad_arguments_are_reported(argv, capsys):
    with pytest.raises(SystemExit):
        benchmark_model.main(argv)
    assert "error" in capsys.readouterr().err


def test_layer_flag_runs_the_layer_benchmark(capsys):
    with pytest.raises(SystemExit):
        benchmark_model.main(["--layer", "--kernel", "4"])
    assert "--kernel must be odd and >= 3, got 4" in capsys.readouterr().err


@pytest.mark.parametrize("enabled", [True, False])
def test_cpu_configs_with_bfloat16_amp_time_the_model_under_autocast(enabled):
    """SOLVER.AMP on the CPU (bfloat16; load_cfg refuses float16 there) times the model under
    CPU autocast, as train_net trains it; without AMP nothing is autocast."""
    opts = ["SOLVER.AMP.ENABLED", str(enabled), "SOLVER.AMP.PRECISION", "bfloat16"]
    cfg = benchmark_model.load_config(DINAT_MINI, opts, "cpu", nat=False)
    with benchmark_model.autocast_of(cfg, torch.device("cpu"))():
        assert torch.is_autocast_enabled("cpu") == enabled
        out = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    assert out.dtype == (torch.bfloat16 if enabled else torch.float32)
