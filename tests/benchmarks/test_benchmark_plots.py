"""--plot of the benchmarks (dinat_m2f/benchmarks/plots.py): the bars drawn are the table's
times, read back from the figure before saving; the NA, layer and model command lines write
the file; a --plot path that cannot be written is a usage error before anything is timed."""

from __future__ import annotations

import cv2
import pytest

from dinat_m2f.benchmarks import layer as benchmark_layer
from dinat_m2f.benchmarks import model as benchmark_model
from dinat_m2f.benchmarks import na as benchmark_na
from dinat_m2f.benchmarks import plots
from tests.conftest import requires_native


def _drawn(figure) -> dict[str, dict[str, list[tuple[str, float, float | None]]]]:
    """{panel: {series: [(group, height, error or None), ...]}} read from the figure."""
    out = {}
    for ax in figure.axes:
        ticks = {
            round(t, 6): label.get_text() for t, label in zip(ax.get_xticks(), ax.get_xticklabels())
        }
        width = None
        panel = {}
        for container in ax.containers:
            if not hasattr(container, "patches"):
                continue  # the error bars' own container
            errors = None
            if container.errorbar is not None:
                segments = container.errorbar.lines[2][0].get_segments()
                errors = [float(seg[1][1] - seg[0][1]) / 2 for seg in segments]
            rows = []
            for i, patch in enumerate(container.patches):
                width = patch.get_width()
                centre = patch.get_x() + width / 2
                # the group's tick is the centre of its bars: find the nearest one
                group = ticks[min(ticks, key=lambda t: abs(t - centre))]
                rows.append((group, patch.get_height(), None if errors is None else errors[i]))
            label = container.get_label()
            panel["" if label.startswith("_") else label] = rows  # matplotlib's "_container0"
        out[ax.get_title()] = panel
    return out


def test_bars_are_the_rows_times():
    shapes = benchmark_na.dinat_shapes([224], ["tiny"], [3, 4], [7])  # 14x14 d1, d2; 7x7 d1
    assert len(shapes) == 3
    times = {"native": (0.002, 0.006), "torch": (0.02, None), "sdpa": (None, None)}
    rows = [
        dict(shape=s, impl=impl, fwd=fwd and fwd * (i + 1), fwdbwd=bwd and bwd * (i + 1))
        for i, s in enumerate(shapes)
        for impl, (fwd, bwd) in times.items()
    ]
    figure = plots.bar_figure(plots.op_bars(rows, benchmark_na.shape_label), "NA")
    labels = [benchmark_na.shape_label(s) for s in shapes]
    assert labels[0] == "224 tiny L3\nk7 d1"
    assert _drawn(figure) == {
        "forward": {
            "native": [(labels[i], pytest.approx(2.0 * (i + 1)), None) for i in range(3)],
            "torch": [(labels[i], pytest.approx(20.0 * (i + 1)), None) for i in range(3)],
        },
        "forward + backward": {
            "native": [(labels[i], pytest.approx(6.0 * (i + 1)), None) for i in range(3)],
        },
    }
    assert [ax.get_yscale() for ax in figure.axes] == ["log", "linear"]  # 2..60 ms; 6..18 ms


def test_model_and_layer_bars_carry_the_iqr():
    model_rows = [
        dict(config="a", backbone="DiNAT-mini", fwd=0.1, fwd_iqr=0.01, train=0.3, train_iqr=0.02),
        dict(config="b", backbone="Swin swin_t", fwd=0.2, fwd_iqr=0.0, train=None, train_iqr=None),
    ]
    drawn = _drawn(plots.bar_figure(plots.model_bars(model_rows), "model"))
    assert drawn == {
        "inference": {
            "": [
                ("a\nDiNAT-mini", pytest.approx(100.0), pytest.approx(10.0)),
                ("b\nSwin swin_t", pytest.approx(200.0), pytest.approx(0.0)),
            ]
        },
        "training step": {"": [("a\nDiNAT-mini", pytest.approx(300.0), pytest.approx(20.0))]},
    }
    layer_rows = [
        dict(level=1, side="16x16", dim=96, kind=kind, fwd=(f, f / 10), fwdbwd=(3 * f, 0.0))
        for kind, f in (("NAT", 0.004), ("DiNAT", 0.005), ("Swin", 0.003))
    ]
    drawn = _drawn(plots.bar_figure(plots.layer_bars(layer_rows), "layer"))
    assert drawn["forward"]["DiNAT"] == [
        ("level 1\n16x16, 96 ch", pytest.approx(5.0), pytest.approx(0.5))
    ]
    assert [b[1] for s in ("NAT", "DiNAT", "Swin") for b in drawn["forward + backward"][s]] == (
        pytest.approx([12.0, 15.0, 9.0])
    )


def test_nothing_to_plot_is_said(tmp_path, capsys):
    with pytest.raises(ValueError, match="no timed row to plot"):
        plots.bar_figure([], "NA")
    plots.save_plot([], "NA", str(tmp_path / "x.png"))
    assert "no plot written" in capsys.readouterr().out
    assert not (tmp_path / "x.png").exists()


def _assert_png(path) -> None:
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] >= 300 and image.std() > 10


@requires_native
def test_command_lines_write_the_plot(tmp_path, capsys):
    names = ("na", "msda", "layer", "model")
    na_png, msda_png, layer_png, model_png = (tmp_path / f"{n}.png" for n in names)
    benchmark_na.main([*QUICK_MSDA, "--plot", str(msda_png)])
    na_argv = ["--quick", "--variants", "tiny", "--levels", "4", "--repeats", "1", "--warmup", "0",
               "--impls", "native", "torch"]  # fmt: skip
    benchmark_na.main([*na_argv, "--plot", str(na_png)])
    benchmark_layer.main([*QUICK_LAYER[1:], "--plot", str(layer_png)])
    swin = "configs/ade20k/semantic-segmentation/swin/maskformer2_tvswin_tiny_bs16_160k_res512.yaml"
    model_argv = ["--config-file", swin, "--backbone-only", "--skip-train", "--resolution",
                  "64", "--warmup", "0", "--repeats", "1", "--device", "cpu",
                  "--threads", "1"]  # fmt: skip
    benchmark_model.main([*model_argv, "--plot", str(model_png)])
    out = capsys.readouterr().out
    for path in (na_png, msda_png, layer_png, model_png):
        assert f"# plot written to {path}" in out
        _assert_png(path)


# toy runs: were the check missing, each would time a little and then fail to write
QUICK_NA = ["--quick", "--variants", "tiny", "--levels", "4", "--impls", "torch",
            "--repeats", "1", "--warmup", "0"]  # fmt: skip
QUICK_MSDA = ["--op", "ms_deform_attn", "--inputs", "64", "--impls", "torch",
              "--repeats", "1", "--warmup", "0"]  # fmt: skip
QUICK_LAYER = ["--layer", "--resolution", "64", "--levels", "2", "--warmup", "0",
               "--repeats", "1", "--device", "cpu", "--threads", "1"]  # fmt: skip


@pytest.mark.parametrize(
    "main, argv",
    [
        (benchmark_na.main, QUICK_NA),
        (benchmark_na.main, QUICK_MSDA),
        (benchmark_layer.main, QUICK_LAYER[1:]),
    ],
)
def test_unwritable_plot_path_is_a_usage_error(main, argv, tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "folder" / "plot.png"
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--plot", str(missing)])
    assert exit_info.value.code == 2
    assert (
        f"--plot {missing}: the folder {missing.parent} does not exist" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main([*argv, "--plot", str(tmp_path / "plot.xyz")])
    err = capsys.readouterr().err
    assert f"--plot {tmp_path / 'plot.xyz'}: use one of the extensions" in err and "png" in err
