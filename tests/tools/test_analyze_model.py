"""tools/analyze_model.py prints parameters and FLOPs (NA ops counted) for a variant or a
config."""

import pytest

from tools import analyze_model


def test_variant_classifier_matches_the_paper(capsys):
    results = analyze_model.main(["--variant", "dinat_mini", "--classifier"])
    out = capsys.readouterr().out
    assert "parameters: 19.98 M" in out and "GFLOPs (multiply-adds): 2.71" in out
    assert "| levels.0 " in out  # the per-module table follows
    assert abs(results["params"] - 20e6) / 20e6 < 0.03


def test_config_backbone_at_another_size(tmp_path, capsys):
    config = tmp_path / "nat_mini.yaml"
    config.write_text(
        "MODEL:\n  BACKBONE:\n    NAME: D2DiNAT\n  DiNAT:\n    EMBED_DIM: 32\n"
        "    DEPTHS: [3, 4, 6, 5]\n    NUM_HEADS: [2, 4, 8, 16]\n    MLP_RATIO: 3.0\n"
        "    DILATIONS: [[1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]\n"
    )
    results = analyze_model.main(
        ["--config-file", str(config), "--input-size", "96", "128", "--tasks", "parameter", "flop"]
    )
    assert "input 1x3x96x128" in capsys.readouterr().out
    assert results["flops"] > 0 and 4e6 < results["params"] < 6e6


def test_bad_arguments_are_reported(capsys):
    with pytest.raises(SystemExit):
        analyze_model.main(["--variant", "dinat_mini", "--input-size", "1", "2", "3"])
    assert "--input-size takes H or H W >= 1, got [1, 2, 3]" in capsys.readouterr().err


def test_full_detector_counts_na_ops_and_heads(capsys):
    """--full-model: a whole Mask R-CNN (the built-in config) on one image; the NA ops are
    counted, and the heads add FLOPs to the backbone + FPN alone."""
    config = "configs/builtin/mask_rcnn_dinat_mini_builtin_shapes.yaml"
    whole = analyze_model.main(
        [
            "--full-model",
            "--config-file",
            config,
            "--input-size",
            "128",
            "160",
            "--tasks",
            "parameter",
            "flop",
        ]
    )
    out = capsys.readouterr().out
    assert "(whole model), input 1x3x128x160" in out
    assert "NA ops (na_qk + na_av, or na_fused)" in out
    assert whole["na_flops"] > 0
    backbone = analyze_model.main(
        ["--config-file", config, "--input-size", "128", "160", "--tasks", "parameter", "flop"]
    )
    assert backbone["na_flops"] == whole["na_flops"]  # the same backbone, the same NA work
    assert whole["flops"] > backbone["flops"] and whole["params"] > backbone["params"]


def test_full_model_needs_a_config(capsys):
    with pytest.raises(SystemExit):
        analyze_model.main(["--full-model", "--variant", "dinat_mini"])
    assert "--full-model goes with --config-file" in capsys.readouterr().err
