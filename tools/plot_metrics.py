#!/usr/bin/env python
"""Draws the training curves of a train_net.py run from its metrics.json into PNG files.

    python tools/plot_metrics.py output/builtin_shapes            # -> output/builtin_shapes/plots/
    python tools/plot_metrics.py OUTPUT_DIR --out DIR

Writes, for what the file holds:
- `losses.png`: total_loss and the final layer's loss terms (loss_ce, loss_mask, loss_dice;
  a detector's loss_cls, loss_box_reg, ...) per iteration; the auxiliary decoder layers' terms
  (loss_*_0, loss_*_1, ...) are in total_loss and not drawn one by one;
- `lr.png`: the learning rate per iteration (the first parameter group's, as detectron2 logs);
- `evaluation.png`: PQ (all / things / stuff), mask and box AP, mIoU at each evaluation.

metrics.json is detectron2's JSONWriter output: one JSON object per line, written every 20
iterations and at each evaluation. Lines that are not a JSON object with an integer
"iteration" (a run killed mid-write, a corrupted file) are skipped and counted; when a resumed
run logged an iteration again, its last record wins. Exit status 1 when the file is missing or
holds no usable record.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field

from matplotlib.figure import Figure

# evaluation panels: (title, y label, [(metrics.json key, legend label)])
EVALUATION_PANELS = (
    (
        "panoptic",
        "PQ",
        [
            ("panoptic_seg/PQ", "PQ"),
            ("panoptic_seg/PQ_th", "PQ things"),
            ("panoptic_seg/PQ_st", "PQ stuff"),
        ],
    ),
    ("instance", "AP", [("segm/AP", "mask AP"), ("bbox/AP", "box AP")]),
    ("semantic", "mIoU", [("sem_seg/mIoU", "mIoU")]),
)
_AUX_LOSS = re.compile(r"^loss_.*_\d+$")  # loss_ce_0 ...: Mask2Former's auxiliary layers


@dataclass
class Metrics:
    """The usable records of a metrics.json: {key: [(iteration, value), ...]} sorted by
    iteration, and the line numbers that were skipped."""

    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    skipped_lines: list[int] = field(default_factory=list)

    def keys(self) -> list[str]:
        return sorted(self.series)


def read_metrics(path: str) -> Metrics:
    """Parses detectron2's metrics.json (see the module docstring for what is skipped)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is this a train_net.py OUTPUT_DIR?")
    by_iteration: dict[int, dict[str, float]] = {}
    skipped = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                skipped.append(number)
                continue
            iteration = record.get("iteration") if isinstance(record, dict) else None
            if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
                skipped.append(number)
                continue
            values = {
                key: float(value)
                for key, value in record.items()
                if key != "iteration"
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
            }
            by_iteration.setdefault(iteration, {}).update(values)  # later lines win
    metrics = Metrics(skipped_lines=skipped)
    for iteration in sorted(by_iteration):
        for key, value in by_iteration[iteration].items():
            metrics.series.setdefault(key, []).append((iteration, value))
    return metrics


def loss_keys(metrics: Metrics) -> list[str]:
    """total_loss first, then the final layer's loss terms, by name."""
    terms = [k for k in metrics.keys() if k.startswith("loss_") and not _AUX_LOSS.match(k)]
    return (["total_loss"] if "total_loss" in metrics.series else []) + terms


def _draw(ax, metrics: Metrics, key: str, label: str, marker: str | None = None) -> None:
    iterations, values = zip(*metrics.series[key])
    ax.plot(iterations, values, label=label, marker=marker)


def losses_figure(metrics: Metrics, title: str) -> Figure | None:
    keys = loss_keys(metrics)
    if not keys:
        return None
    figure = Figure(figsize=(7, 4), layout="constrained")
    ax = figure.add_subplot()
    for key in keys:
        _draw(ax, metrics, key, key)
    ax.set(xlabel="iteration", ylabel="loss", title=f"training losses: {title}")
    if all(v > 0 for k in keys for _, v in metrics.series[k]):
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def lr_figure(metrics: Metrics, title: str) -> Figure | None:
    if "lr" not in metrics.series:
        return None
    figure = Figure(figsize=(7, 3), layout="constrained")
    ax = figure.add_subplot()
    _draw(ax, metrics, "lr", "lr")
    ax.set(xlabel="iteration", ylabel="learning rate", title=f"learning rate: {title}")
    ax.grid(True, alpha=0.3)
    return figure


def evaluation_figure(metrics: Metrics, title: str) -> Figure | None:
    panels = [
        (name, ylabel, [(k, label) for k, label in lines if k in metrics.series])
        for name, ylabel, lines in EVALUATION_PANELS
    ]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    last_iteration = max(i for series in metrics.series.values() for i, _ in series) or 1
    figure = Figure(figsize=(4 * len(panels), 3.5), layout="constrained")
    for i, (name, ylabel, lines) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), i + 1)
        for key, label in lines:
            _draw(ax, metrics, key, label, marker="o")
            for iteration, value in metrics.series[key]:  # one evaluation is one point
                ax.annotate(f"{value:.1f}", (iteration, value), xytext=(4, 4), fontsize="small",
                            textcoords="offset points")  # fmt: skip
        # percentages, over the whole run: a single final evaluation still reads at a glance
        ax.set(xlabel="iteration", ylabel=ylabel, title=name, ylim=(0, 110))
        ax.set_xlim(0, 1.08 * last_iteration)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    figure.suptitle(f"evaluation: {title}")
    return figure


def metrics_figures(metrics: Metrics, title: str) -> dict[str, Figure]:
    """{file name: figure} for what `metrics` holds."""
    figures = {
        "losses.png": losses_figure(metrics, title),
        "lr.png": lr_figure(metrics, title),
        "evaluation.png": evaluation_figure(metrics, title),
    }
    return {name: figure for name, figure in figures.items() if figure is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output_dir", help="OUTPUT_DIR of the run (holds metrics.json)")
    parser.add_argument("--out", help="folder for the PNG files (default: OUTPUT_DIR/plots)")
    args = parser.parse_args(argv)
    path = os.path.join(args.output_dir, "metrics.json")
    try:
        metrics = read_metrics(path)
    except (FileNotFoundError, OSError) as error:
        print(f"plot_metrics: {error}", file=sys.stderr)
        return 1
    if metrics.skipped_lines:
        lines = ", ".join(map(str, metrics.skipped_lines[:10]))
        more = "" if len(metrics.skipped_lines) <= 10 else ", ..."
        print(
            f"plot_metrics: {path}: skipped {len(metrics.skipped_lines)} unreadable line(s): "
            f"{lines}{more}",
            file=sys.stderr,
        )
    figures = metrics_figures(metrics, os.path.basename(os.path.normpath(args.output_dir)))
    if not figures:
        print(f"plot_metrics: {path} holds no losses, learning rate or evaluation", file=sys.stderr)
        return 1
    out = args.out or os.path.join(args.output_dir, "plots")
    os.makedirs(out, exist_ok=True)
    for name, figure in figures.items():
        figure.savefig(os.path.join(out, name), dpi=100)
        print(f"plot_metrics: wrote {os.path.join(out, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
