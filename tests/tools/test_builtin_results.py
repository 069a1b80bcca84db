import json

from tools.builtin_results import main


def test_prints_the_last_evaluation(tmp_path, capsys):
    records = [
        {"iteration": 10, "total_loss": 3.0},
        {"iteration": 19, "panoptic_seg/PQ": 10.0, "sem_seg/mIoU": 20.0},
        {
            "iteration": 29,
            "panoptic_seg/PQ": 77.91,
            "panoptic_seg/PQ_th": 57.0,
            "panoptic_seg/PQ_st": 97.5,
            "segm/AP": 37.66,
            "sem_seg/mIoU": 95.7,
        },
        {"iteration": 30, "total_loss": 1.0},
    ]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "iteration 29" in out
    assert "77.9 / 57.0 / 97.5" in out and "37.7 / - / -" in out and "95.7 / -" in out


def test_missing_or_empty_metrics_are_reported(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "metrics.json not found" in capsys.readouterr().err
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 1, "total_loss": 2.0}) + "\n")
    assert main([str(tmp_path)]) == 1
    assert "no evaluation results" in capsys.readouterr().err
