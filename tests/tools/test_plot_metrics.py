"""tools/plot_metrics.py: the curves drawn are the metrics.json records (read back from the
figures' lines before saving), with damaged lines skipped and a resumed run's repeated
iterations taken from its last record; clear errors for a missing or useless file."""

from __future__ import annotations

import json

import cv2
import pytest

from tools import plot_metrics


def _train(iteration: int, scale: float) -> dict:
    return {
        "iteration": iteration,
        "total_loss": 10.0 * scale,
        "loss_ce": 1.0 * scale,
        "loss_mask": 2.0 * scale,
        "loss_dice": 3.0 * scale,
        "loss_ce_0": 4.0 * scale,  # an auxiliary decoder layer's term: not drawn on its own
        "lr": 1e-4 * scale,
        "time": 0.5,
    }


EVALUATION = {
    "iteration": 99,
    "panoptic_seg/PQ": 40.0,
    "panoptic_seg/PQ_th": 30.0,
    "panoptic_seg/PQ_st": 50.0,
    "segm/AP": 20.0,
    "bbox/AP": 15.0,
    "sem_seg/mIoU": 60.0,
}


@pytest.fixture
def run_dir(tmp_path):
    """A run interrupted while writing iteration 79, resumed from iteration 40: iterations 59
    and 79 are logged again with other values; evaluations at 59 and 99."""
    lines = [
        json.dumps(_train(19, 1.0)),
        json.dumps(_train(39, 0.8)),
        json.dumps(_train(59, 0.7)),
        json.dumps({**EVALUATION, "iteration": 59, "panoptic_seg/PQ": 10.0, "segm/AP": 5.0}),
        '{"iteration": 79, "total_loss": 5.',  # cut off mid-write (line 5)
        "\x00\x00\x00\x00",  # a block of zeros after a crash (line 6)
        json.dumps(_train(59, 0.6)),  # the resumed run
        json.dumps({"iteration": "79", "total_loss": 1.0}),  # not an integer iteration (8)
        json.dumps(_train(79, 0.5)),
        json.dumps({**_train(99, 0.4), "loss_dice": float("nan")}),  # NaN: left out
        json.dumps(EVALUATION),
        "[1, 2, 3]",  # JSON, but not a record (line 12)
    ]
    (tmp_path / "metrics.json").write_text("\n".join(lines) + "\n")
    return tmp_path


# what the file above holds, worked out by hand: iteration -> scale of _train
EXPECTED_SCALES = {19: 1.0, 39: 0.8, 59: 0.6, 79: 0.5, 99: 0.4}


def _lines(ax) -> dict[str, tuple[list, list]]:
    return {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
        for line in ax.get_lines()
    }


def test_figures_hold_the_records(run_dir):
    metrics = plot_metrics.read_metrics(str(run_dir / "metrics.json"))
    assert metrics.skipped_lines == [5, 6, 8, 12]
    figures = plot_metrics.metrics_figures(metrics, "run")
    assert sorted(figures) == ["evaluation.png", "losses.png", "lr.png"]

    iterations = sorted(EXPECTED_SCALES)
    (losses,) = figures["losses.png"].axes
    drawn = _lines(losses)
    assert list(drawn) == ["total_loss", "loss_ce", "loss_dice", "loss_mask"]
    for key, unit in (("total_loss", 10.0), ("loss_ce", 1.0), ("loss_mask", 2.0)):
        assert drawn[key][0] == iterations
        assert drawn[key][1] == pytest.approx([unit * EXPECTED_SCALES[i] for i in iterations])
    assert drawn["loss_dice"] == ([19, 39, 59, 79], pytest.approx([3.0, 2.4, 1.8, 1.5]))

    (lr,) = figures["lr.png"].axes
    assert _lines(lr) == {
        "lr": (iterations, pytest.approx([1e-4 * s for s in (1, 0.8, 0.6, 0.5, 0.4)]))
    }

    panels = {ax.get_title(): _lines(ax) for ax in figures["evaluation.png"].axes}
    assert panels == {
        "panoptic": {
            "PQ": ([59, 99], [10.0, 40.0]),
            "PQ things": ([59, 99], [30.0, 30.0]),
            "PQ stuff": ([59, 99], [50.0, 50.0]),
        },
        "instance": {"mask AP": ([59, 99], [5.0, 20.0]), "box AP": ([59, 99], [15.0, 15.0])},
        "semantic": {"mIoU": ([59, 99], [60.0, 60.0])},
    }


def test_command_writes_pngs_and_names_skipped_lines(run_dir, capsys):
    assert plot_metrics.main([str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert "skipped 4 unreadable line(s): 5, 6, 8, 12" in captured.err
    for name in ("losses.png", "lr.png", "evaluation.png"):
        image = cv2.imread(str(run_dir / "plots" / name))
        assert image is not None and image.shape[0] > 200 and image.std() > 10, name
        assert f"wrote {run_dir / 'plots' / name}" in captured.out


def test_training_only_run_has_no_evaluation_figure(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(_train(19, 1.0)) + "\n")
    figures = plot_metrics.metrics_figures(
        plot_metrics.read_metrics(str(tmp_path / "metrics.json")), "x"
    )
    assert sorted(figures) == ["losses.png", "lr.png"]


def test_missing_or_useless_file_is_an_error(tmp_path, capsys):
    assert plot_metrics.main([str(tmp_path)]) == 1
    assert f"{tmp_path / 'metrics.json'} not found: is this a train_net.py OUTPUT_DIR?" in (
        capsys.readouterr().err
    )
    (tmp_path / "metrics.json").write_text('{"iteration": 3\n{"data_time": 0.1}\n')
    assert plot_metrics.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "skipped 2 unreadable line(s): 1, 2" in err
    assert "holds no losses, learning rate or evaluation" in err
    assert not (tmp_path / "plots").exists()
