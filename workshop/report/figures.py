"""What every lesson's figures share. Each figure takes runs (or paths to load them from), returns a matplotlib
Figure and never raises on bad logs: a run whose file is missing or damaged gets no line, only a legend entry
saying why, so a classroom notebook always shows something. Figures are built without pyplot, so a notebook
shows each one once (as the cell's value) and tests leak none.
"""

import math
import os
import textwrap

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from workshop.logparse import Missing
from workshop.report.cells import is_number
from workshop.report.runs import Run, load_runs
from workshop.report.spread import Spread


def as_runs(runs, lessons, lesson=None):
    """A list of Run from Runs, paths (their runs' lessons decided by `lessons`), or a mix; only those of `lesson`
    when given."""
    if isinstance(runs, (str, os.PathLike, Run)):
        runs = [runs]
    paths = [r for r in runs if not isinstance(r, Run)]
    loaded = [r for r in runs if isinstance(r, Run)] + (load_runs(paths, lessons) if paths else [])
    return [r for r in loaded if lesson is None or r.lesson == lesson]


def figure(title, xlabel, ylabel):
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def finish(fig, ax, notes, empty_text="no runs to plot"):
    """Legend with the plotted lines plus one text-only entry per note (a run that could not be drawn)."""
    handles, labels = ax.get_legend_handles_labels()
    for note in notes:
        handles.append(Line2D([], [], linestyle="none"))  # legend-only: never added to the axes
        labels.append(textwrap.shorten(note, 90))
    if not ax.lines:
        ax.text(0.5, 0.5, empty_text, ha="center", va="center", transform=ax.transAxes, color="grey")
    if handles:  # below the axes, so many runs never hide the lines
        fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=1 if len(labels) <= 4 else 2)
    return fig


def damaged(run, filename):
    return " (some lines unreadable)" if filename in run.damage else ""



def points(events, key, per_epoch):
    """(steps, values) of the events holding a numeric `key`. log_history carries the step; Trainer stdout only
    the epoch, which the steps per epoch convert. A NaN value stays: matplotlib leaves a gap there."""
    steps, values = [], []
    for event in events:
        value, step, epoch = event.get(key), event.get("step"), event.get("epoch")
        if not isinstance(step, float) and isinstance(epoch, float) and not isinstance(per_epoch, Missing):
            step = epoch * per_epoch
        if isinstance(value, float) and isinstance(step, float) and math.isfinite(step):
            steps.append(step)
            values.append(value)
    return steps, values



def seconds(timestamps):
    return (timestamps - timestamps.min()).dt.total_seconds()


def no_gpu_reason(missing):
    # read_gpu_csv's detail for a '# no GPU: <reason>' file ends with ': <reason>'
    return missing.detail.partition(": ")[2] or missing.detail or missing.cell



def plot_rss(ax, run, label, **style):
    """Host RSS vs psrecord's elapsed seconds; False when the run has none."""
    cpu = run.cpu
    if isinstance(cpu, Missing) or cpu.empty:
        return False
    ax.plot(cpu["elapsed_s"], cpu["real_mib"], label=label + damaged(run, "cpu_memory.log"), **style)
    return True



def legend_all(fig, axes, notes):
    """One legend under all the axes (each label once) plus a text-only entry per note."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
        if not ax.lines and not ax.patches and not ax.texts:
            ax.text(0.5, 0.5, "no runs to plot", ha="center", va="center", transform=ax.transAxes, color="grey")
    for note in notes:
        handles.append(Line2D([], [], linestyle="none"))
        labels.append(textwrap.shorten(note, 100))
    if handles:
        fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=1 if len(labels) <= 5 else 2)
    return fig


def grouped_bars(ax, groups, series, values, unit):
    """Grouped bars: one group per label in `groups`, one bar per name in `series`; values[(group, series)] is a
    cell (a number gets a bar and its label, anything else no bar). Returns the series that had a number."""
    width = 0.8 / max(len(series), 1)
    drawn = []
    for i, name in enumerate(series):
        cells = [values.get((group, name)) for group in groups]
        cells = [c.value if isinstance(c, Spread) else c for c in cells]  # a steady median's bar, its number
        if not any(is_number(c) for c in cells):
            continue
        drawn.append(name)
        x = [n + (i - (len(series) - 1) / 2) * width for n in range(len(groups))]
        bars = ax.bar(x, [c if is_number(c) else 0.0 for c in cells], width, label=name, color=f"C{i}")
        ax.bar_label(bars, labels=[bar_label(c) for c in cells], fontsize=7)
    ax.margins(y=0.12)  # room above the tallest bar for its label, inside the frame
    ax.set_xticks(range(len(groups)), groups, rotation=15, ha="right")
    ax.set_ylabel(unit)
    ax.grid(axis="y", alpha=0.3)
    if groups and not drawn:  # say why the panel is empty (no GPU, not run), instead of "no runs to plot"
        shown = sorted({str(c) for c in values.values() if c is not None and not is_number(c)}) or ["no numbers"]
        ax.text(0.5, 0.5, textwrap.fill(f"nothing to draw: {', '.join(shown)} (see the table's notes)", 30),
                ha="center", va="center", transform=ax.transAxes, color="grey", fontsize=9)
    return drawn


def bar_label(cell):
    if not is_number(cell):
        return ""
    return f"{cell:,.0f}" if abs(cell) >= 100 else f"{cell:.3g}"  # tokens/s and MiB whole, seconds per step not
