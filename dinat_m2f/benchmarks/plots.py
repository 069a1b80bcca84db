"""The benchmarks' tables as bar charts (`--plot FILE.png` of the NA, MSDeformAttn and model
benchmarks): milliseconds per shape (or config, or level) and implementation, one panel per
measurement (forward, forward + backward; inference, training step), with the inter-quartile
range as error bars where the table has it. Rows that were skipped or failed have no bar.
Panels whose times span more than 20x use a log scale.
"""

from __future__ import annotations

import argparse
import os
from typing import NamedTuple

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

LOG_SCALE_SPREAD = 20.0  # max / min time in a panel above which the y axis is logarithmic


class Bar(NamedTuple):
    """One bar: in panel `panel`, at x group `group`, of legend entry `series`."""

    panel: str
    group: str
    series: str
    ms: float
    iqr_ms: float | None = None


def _unique(items) -> list:
    return list(dict.fromkeys(items))


def bar_figure(bars: list[Bar], title: str) -> Figure:
    """Grouped bars, one subplot per panel (in order of first appearance), groups on the x
    axis and one colour per series; each series' bars are a BarContainer labelled with the
    series (no legend when there is a single unnamed series)."""
    if not bars:
        raise ValueError(f"{title}: no timed row to plot (every row was skipped or failed)")
    panels = _unique(b.panel for b in bars)
    groups = _unique(b.group for b in bars)
    series = _unique(b.series for b in bars)
    width = 0.8 / len(series)
    figure = Figure(
        figsize=(max(6.0, 0.4 + 0.28 * len(groups) * len(series)), 3.2 * len(panels)),
        layout="constrained",
    )
    for p, panel in enumerate(panels):
        ax = figure.add_subplot(len(panels), 1, p + 1)
        in_panel = [b for b in bars if b.panel == panel]
        for s, name in enumerate(series):
            mine = [b for b in in_panel if b.series == name]
            if not mine:
                continue
            x = [groups.index(b.group) + (s - (len(series) - 1) / 2) * width for b in mine]
            errors = [b.iqr_ms or 0.0 for b in mine]
            ax.bar(
                x,
                [b.ms for b in mine],
                width,
                label=name,
                yerr=errors if any(errors) else None,
                capsize=2,
            )
        times = [b.ms for b in in_panel if b.ms > 0]
        if times and max(times) / min(times) > LOG_SCALE_SPREAD:
            ax.set_yscale("log")
            plain = FuncFormatter(lambda value, _: f"{value:g}")  # 60, not 6 x 10^1
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        ax.set_xticks(range(len(groups)), groups, fontsize="small")
        ax.set(ylabel="ms", title=panel)
        ax.grid(True, axis="y", alpha=0.3)
        if series != [""]:
            ax.legend(fontsize="small")
    figure.suptitle(title)
    return figure


def op_bars(rows: list[dict], shape_label) -> list[Bar]:
    """Bars of an op benchmark's rows (NA, MSDeformAttn: "shape", "impl", "fwd", "fwdbwd"
    in seconds): panels forward and forward + backward, groups `shape_label(shape)`."""
    bars = []
    for panel, key in (("forward", "fwd"), ("forward + backward", "fwdbwd")):
        for row in rows:
            if row[key] is not None:
                bars.append(Bar(panel, shape_label(row["shape"]), row["impl"], row[key] * 1e3))
    return bars


def model_bars(rows: list[dict]) -> list[Bar]:
    """Bars of the model benchmark's rows: panels inference and training step, one group per
    config (its backbone below), IQR error bars."""
    bars = []
    for panel, key in (("inference", "fwd"), ("training step", "train")):
        for row in rows:
            if row[key] is not None:
                group = f"{row['config']}\n{row['backbone']}"
                bars.append(Bar(panel, group, "", row[key] * 1e3, row[f"{key}_iqr"] * 1e3))
    return bars


def layer_bars(rows: list[dict]) -> list[Bar]:
    """Bars of the layer benchmark's rows: panels forward and forward + backward, groups the
    levels, one series per layer kind (NAT, DiNAT, Swin), IQR error bars."""
    bars = []
    for panel, key in (("forward", "fwd"), ("forward + backward", "fwdbwd")):
        for row in rows:
            median, iqr = row[key]
            group = f"level {row['level']}\n{row['side']}, {row['dim']} ch"
            bars.append(Bar(panel, group, row["kind"], median * 1e3, iqr * 1e3))
    return bars


def add_plot_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plot", metavar="FILE.png", help="also draw the table as a bar chart into this file"
    )


def check_plot_argument(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage error (exit 2) for a --plot file whose folder does not exist or whose extension
    matplotlib cannot write, before anything is timed."""
    if args.plot is None:
        return
    folder = os.path.dirname(os.path.abspath(args.plot))
    if not os.path.isdir(folder):
        parser.error(f"--plot {args.plot}: the folder {folder} does not exist")
    extension = os.path.splitext(args.plot)[1].lower().lstrip(".")
    formats = Figure().canvas.get_supported_filetypes()
    if extension not in formats:
        parser.error(f"--plot {args.plot}: use one of the extensions {', '.join(sorted(formats))}")


def save_plot(bars: list[Bar], title: str, path: str) -> None:
    """Draws `bars` and writes the file (format by extension), or says there was nothing."""
    if not bars:
        print(f"# no plot written to {path}: every row was skipped or failed")
        return
    bar_figure(bars, title).savefig(path, dpi=100)
    print(f"# plot written to {path}")
