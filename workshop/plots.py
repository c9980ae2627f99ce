"""Figures and small helpers for the lesson notebooks (notebooks/*.ipynb).

    from workshop import plots
    runs = plots.ensure_run("../logs", "baseline", "slurm/baseline.slurm", ["--profile", "tiny"])
    plots.loss_curves(runs)             # train and eval loss vs step, one colour per run
    plots.gpu_memory_timeline(runs)     # nvidia-smi memory.used; host RSS for a run that had no GPU
    plots.cpu_memory_timeline(runs)     # psrecord's host RSS
    # lesson 2: one run per DeepSpeed config, compared on one figure
    runs = plots.ensure_configs("../logs", ["stage2_offload", "stage2_offload_nopin"], ["--profile", "tiny"])
    plots.zero_memory_timelines(runs)   # GPU and host memory over time, one colour per configuration
    plots.zero_peak_bars(tables["deepspeed_single_gpu_part2"])  # peak memory by configuration
    # lesson 3: from its tables
    plots.scaling_throughput(tables["deepspeed_multi_gpu_weak_scaling"])  # samples/s vs GPUs, and ideal
    plots.memory_per_gpu(tables["deepspeed_multi_gpu_weak_scaling"])      # peak and mean MiB per GPU vs GPUs
    plots.zero_tradeoff(tables["deepspeed_multi_gpu_zero_2gpu"])          # memory vs runtime per ZeRO stage

`runs` is what `fill_tables.load_runs` returns, or paths (a logs folder, run folders) to load it from.
Every function returns a matplotlib Figure and never raises on bad logs: a run whose file is missing or damaged
gets no line, only a legend entry saying why, so a classroom notebook always shows something.
Figures are built without pyplot, so a notebook shows each one once (as the cell's value) and tests leak none.
"""

import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from workshop.fill_tables import (Run, config_of, is_number, latest_runs, load_runs, setup_label, setup_of,
                                  steps_per_epoch)
from workshop.logparse import Missing, final_summary

REPO = Path(__file__).resolve().parents[1]


def as_runs(runs, lesson=None):
    """A list of Run from Runs, paths, or a mix; only those of `lesson` when given."""
    if isinstance(runs, (str, os.PathLike, Run)):
        runs = [runs]
    paths = [r for r in runs if not isinstance(r, Run)]
    loaded = [r for r in runs if isinstance(r, Run)] + (load_runs(paths) if paths else [])
    return [r for r in loaded if lesson is None or r.lesson == lesson]


# ---------------------------------------------------------------------------------------------- figures

def _figure(title, xlabel, ylabel):
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _finish(fig, ax, notes, empty_text="no runs to plot"):
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


def _damaged(run, filename):
    return " (some lines unreadable)" if filename in run.damage else ""


def _points(events, key, per_epoch):
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


def loss_curves(runs):
    """Train loss (solid) and eval loss (dashed, dots) vs optimizer step, one colour per run."""
    fig, ax = _figure("Loss vs step: train (solid) and eval (dashed)", "optimizer step", "loss")
    notes = []
    for run in as_runs(runs):
        events = run.events
        if isinstance(events, Missing) or not events:
            notes.append(f"{run.name}: no loss curve, {events or 'no log events'}")
            continue
        per_epoch = steps_per_epoch(run, final_summary(events))
        train = _points(events, "loss", per_epoch)
        evals = _points(events, "eval_loss", per_epoch)
        if not train[0] and not evals[0]:
            notes.append(f"{run.name}: no loss values with a step ({run.status})")
            continue
        source = "" if run.events_file == "log_history.jsonl" else f", from {run.events_file}"
        label = f"{run.name} ({run.status}{source}){_damaged(run, run.events_file)}"
        line = ax.plot(*train, label=f"{label} train")[0] if train[0] else None
        color = line.get_color() if line else None
        if evals[0]:
            ax.plot(*evals, "--o", color=color, markersize=4, label=f"{label} eval")
    return _finish(fig, ax, notes)


def _seconds(timestamps):
    return (timestamps - timestamps.min()).dt.total_seconds()


def _no_gpu_reason(missing):
    # read_gpu_csv's detail for a '# no GPU: <reason>' file ends with ': <reason>'
    return missing.detail.partition(": ")[2] or missing.detail or missing.cell


def gpu_memory_timeline(runs):
    """nvidia-smi memory.used (MiB) vs seconds since the run's first sample, one line per run and GPU.
    A run that had no GPU shows its host RSS (psrecord) instead, dotted, and says why in the title."""
    fig, ax = _figure("GPU memory.used (nvidia-smi)", "seconds since the first sample", "MiB")
    notes, no_gpu = [], {}  # reason -> runs
    for run in as_runs(runs):
        gpu = run.gpu
        if isinstance(gpu, Missing):
            if gpu.cell != "n/a (no GPU)":
                notes.append(f"{run.name}: no GPU line, {gpu.cell}")
                continue
            no_gpu.setdefault(_no_gpu_reason(gpu), []).append(run.name)
            if _plot_rss(ax, run, f"{run.name} host RSS (no GPU)", linestyle=":"):
                continue
            notes.append(f"{run.name}: no GPU, and no host RSS either ({run.cpu})")
            continue
        samples = gpu.dropna(subset=["timestamp", "memory_used_mib"])
        if samples.empty:
            notes.append(f"{run.name}: no GPU line, no timestamped memory.used values")
            continue
        samples = samples.assign(seconds=_seconds(samples["timestamp"]))
        for index, one_gpu in samples.groupby("index"):
            name = one_gpu["name"].iloc[0]
            ax.plot(one_gpu["seconds"], one_gpu["memory_used_mib"],
                    label=f"{run.name} GPU {index} ({name}){_damaged(run, 'gpu_memory.csv')}")
    if no_gpu:
        # The reason goes in the title: a CPU-only classroom sees why its lines are host memory.
        ax.set_title("\n".join(["GPU memory.used (nvidia-smi); host RSS (psrecord) for runs without a GPU"]
                               + [textwrap.fill(f"no GPU ({', '.join(names)}): {reason}", 100)
                                  for reason, names in no_gpu.items()]), fontsize=9)
    return _finish(fig, ax, notes)


def _plot_rss(ax, run, label, **style):
    """Host RSS vs psrecord's elapsed seconds; False when the run has none."""
    cpu = run.cpu
    if isinstance(cpu, Missing) or cpu.empty:
        return False
    ax.plot(cpu["elapsed_s"], cpu["real_mib"], label=label + _damaged(run, "cpu_memory.log"), **style)
    return True


def cpu_memory_timeline(runs):
    """Host RSS (MiB, the training and its children, from psrecord) vs seconds since psrecord started."""
    fig, ax = _figure("Host memory: RSS of the training and its children (psrecord)",
                      "seconds since the logger started", "MiB")
    notes = []
    for run in as_runs(runs):
        if not _plot_rss(ax, run, f"{run.name} ({run.status})"):
            notes.append(f"{run.name}: no RSS line, {run.cpu}")
    return _finish(fig, ax, notes)


# ---------------------------------------------------------------------------------------------- lesson 2 figures
# Like lesson 2's tables, these show the latest completed run of each (model and data, configuration).

def _legend_all(fig, axes, notes):
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


def zero_memory_timelines(runs):
    """Lesson 2: GPU memory.used (nvidia-smi, top) and host RSS (psrecord, bottom) vs seconds, one colour per
    configuration, so the ZeRO stages and offload choices compare on one figure."""
    chosen, _ = latest_runs(as_runs(runs, "deepspeed_single_gpu"))
    several = len({setup_of(run) for run in chosen}) > 1
    fig = Figure(figsize=(9, 7.5), layout="constrained")
    gpu_ax, cpu_ax = fig.subplots(2, 1, sharex=True)
    gpu_ax.set_title("GPU memory.used (nvidia-smi)", fontsize=11)
    cpu_ax.set_title("Host memory: RSS of the training and its children (psrecord)", fontsize=11)
    cpu_ax.set_xlabel("seconds since the logger started")
    for ax in (gpu_ax, cpu_ax):
        ax.set_ylabel("MiB")
        ax.grid(alpha=0.3)
    notes, no_gpu = [], {}  # reason -> configs
    for i, run in enumerate(chosen):
        label = f"{config_of(run)}, {setup_label(setup_of(run))}" if several else config_of(run)
        color = f"C{i % 10}"
        if isinstance(run.gpu, Missing):
            if run.gpu.cell == "n/a (no GPU)":
                no_gpu.setdefault(_no_gpu_reason(run.gpu), []).append(label)
            else:
                notes.append(f"{label}: no GPU line, {run.gpu.cell}")
        else:
            samples = run.gpu.dropna(subset=["timestamp", "memory_used_mib"])
            samples = samples.assign(seconds=_seconds(samples["timestamp"]))
            for n, (index, one_gpu) in enumerate(samples.groupby("index")):
                gpu_ax.plot(one_gpu["seconds"], one_gpu["memory_used_mib"], color=color,
                            label=None if n else label + _damaged(run, "gpu_memory.csv"))
        if not _plot_rss(cpu_ax, run, label, color=color):
            notes.append(f"{label}: no host RSS line, {run.cpu}")
    if no_gpu:  # a CPU-only classroom sees why the top panel is empty
        gpu_ax.text(0.5, 0.5, "\n".join(textwrap.fill(f"no GPU ({', '.join(names)}): {reason}", 90)
                                        for reason, names in no_gpu.items()),
                    ha="center", va="center", transform=gpu_ax.transAxes, color="grey", fontsize=9)
    return _legend_all(fig, [gpu_ax, cpu_ax], notes)


ZERO_BARS = ["peak GPU MiB (nvidia-smi)", "torch max reserved MiB", "DeepSpeed estimate MiB (model states)",
             "peak CPU MiB (psrecord)"]


def _mib(value):
    if not is_number(value):
        return ""
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"  # bloom-tiny's estimate is under 1 MiB


def zero_peak_bars(part2):
    """Lesson 2: peak memory by configuration as grouped bars, one panel per model and data, from the Part 2 table
    (build_tables(...)["deepspeed_single_gpu_part2"], or None). A cell without a number gets no bar."""
    if part2 is None or part2.empty:
        fig = Figure(figsize=(9, 3), layout="constrained")
        return _legend_all(fig, [fig.add_subplot()], [])
    setups = list(dict.fromkeys(zip(part2["model"], part2["init"], part2["subset"])))
    fig = Figure(figsize=(9, 3.5 * len(setups) + 1.5), layout="constrained")
    axes = list(fig.subplots(len(setups), 1, squeeze=False)[:, 0])
    measured = [c for c in ZERO_BARS if c in part2 and part2[c].map(is_number).any()]
    width = 0.8 / max(len(measured), 1)
    for ax, setup in zip(axes, setups):
        rows = part2[[row_setup == setup for row_setup in zip(part2["model"], part2["init"], part2["subset"])]]
        for i, column in enumerate(measured):
            x = [n + (i - (len(measured) - 1) / 2) * width for n in range(len(rows))]
            bars = ax.bar(x, [v if is_number(v) else 0.0 for v in rows[column]], width, label=column,
                          color=f"C{ZERO_BARS.index(column)}")
            ax.bar_label(bars, labels=[_mib(v) for v in rows[column]], fontsize=7)
        ax.set_xticks(range(len(rows)), rows["config"], rotation=20, ha="right")
        ax.set_ylabel("MiB")
        ax.set_title(f"Peak memory by configuration: {setup_label(setup)}", fontsize=11)
        ax.grid(axis="y", alpha=0.3)
    return _legend_all(fig, axes, [f"no bars for {c}: no numbers (see the table's notes)"
                                   for c in ZERO_BARS if c not in measured])


# ---------------------------------------------------------------------------------------------- notebook helpers

def ensure_run(logs, lesson, script, args=(), run=True, tail=15):
    """The runs of `lesson` under `logs`. When there are none and `run` is true, first runs
    `bash <repo>/<script> <args>` (e.g. slurm/baseline.slurm --profile tiny) and prints its output's tail,
    so a notebook works in a classroom where nothing has run yet.

    The .slurm files write their run folder under the repository's logs/; when `logs` is elsewhere (a test's
    tmp dir), the new run folder is moved there and checkpoints go to an `outputs/` folder beside `logs`.
    """
    found = as_runs([logs], lesson)  # a logs folder that does not exist yet just holds no runs
    if found or not run:
        if not found:
            print(f"no {lesson} run under {logs}: run `bash {script} {' '.join(args)}` from the repository root")
        return found

    _run_script(logs, script, args, lesson, tail)
    return as_runs([logs], lesson)


def ensure_configs(logs, configs, args=(), run=True, tail=15):
    """Lesson 2's runs under `logs`, after running `bash slurm/<config>.slurm <args>` for each of `configs`
    that has no run there yet (when `run` is true); as ensure_run, one configuration at a time."""
    have = {config_of(r) for r in as_runs([logs], "deepspeed_single_gpu")}
    for config in configs:
        if config in have:
            continue
        script = f"slurm/{config}.slurm"
        if run:
            _run_script(logs, script, args, config, tail)
        else:
            print(f"no {config} run under {logs}: run `bash {script} {' '.join(args)}` from the repository root")
    return as_runs([logs], "deepspeed_single_gpu")


def _run_script(logs, script, args, name, tail):
    """`bash <repo>/<script> <args>`, printing its output's tail; the run folder it writes ends up under `logs`
    and, when `logs` is not the repository's logs/, checkpoints under `outputs/<name>` beside it."""
    logs = Path(logs).resolve()
    command = ["bash", str(REPO / script), *args]
    elsewhere = logs != (REPO / "logs").resolve()
    if elsewhere and not any(arg.startswith("--output-dir") for arg in args):
        command += ["--output-dir", str(logs.parent / "outputs" / name)]
    # The .slurm file runs `python` from PATH unless told otherwise: use this kernel's interpreter (the venv).
    env = {**os.environ, "WORKSHOP_PYTHON": os.environ.get("WORKSHOP_PYTHON", sys.executable)}
    print(f"no {name} run under {logs}; running:\n  {' '.join(command)}")
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]  # splitlines also splits tqdm's \r
    if done.returncode == 0:  # the run's own progress lines (often after tqdm's bar); a failure shows everything
        lines = [line[line.index("[workshop]"):] for line in lines if "[workshop]" in line]
    print("...\n" + "\n".join(lines[-tail:]))
    if done.returncode != 0:
        print(f"the run exited with status {done.returncode}: its run folder (if any) still shows how far it got")

    # common.sh announces its folder as "[workshop] run <run id> on <host>: <absolute run folder>".
    announced = re.search(r"^\[workshop\] run (\S+) on \S+: (.+)$", done.stdout, re.MULTILINE)
    if announced and elsewhere and Path(announced.group(2)).is_dir():
        logs.mkdir(parents=True, exist_ok=True)
        shutil.move(announced.group(2), logs / announced.group(1))
        print(f"moved the run folder to {logs / announced.group(1)}")


def show_table(tables, key):
    """Display one table of fill_tables.build_tables: its title, the DataFrame, and the notes under it."""
    from IPython.display import Markdown, display  # only notebooks call this

    df = tables.get(key)
    if df is None:
        display(Markdown(f"*no runs yet for table `{key}`*"))
        return
    display(Markdown(f"#### {df.attrs['title']}"))
    with pd.option_context("display.precision", 4):  # losses to 4 decimals, not 6
        display(df)
    if df.attrs.get("answers"):  # quiz answers computed from the rows (lesson 2)
        display(Markdown("**Answers:**\n" + "\n".join(f"- {answer}" for answer in df.attrs["answers"])))
    if df.attrs["notes"]:
        display(Markdown("Notes:\n" + "\n".join(f"- {note}" for note in df.attrs["notes"])))


# ---------------------------------------------------------------------------------------------- lesson 3 figures
# From lesson 3's tables (build_tables(...)["deepspeed_multi_gpu_weak_scaling"] / ["deepspeed_multi_gpu_zero_2gpu"]),
# one line per series: model, init, samples per GPU and config. A cell without a number gets no point.

def _series(weak):
    """(label, rows sorted by GPU count) per weak-scaling series that has at least one row."""
    if weak is None or weak.empty:
        return []
    keys = ["model", "init", "samples per GPU", "config"]
    return [(f"{model} ({init}, {per_gpu}/GPU, {config})", rows.sort_values("GPUs (processes)"))
            for (model, init, per_gpu, config), rows in weak.astype({"samples per GPU": str}).groupby(keys, sort=False)]


def _numbers(rows, column, scale=None):
    """(GPU counts, values) of the rows whose `column` holds a number; `scale(row)` divides each value."""
    picked = [(row["GPUs (processes)"], row[column] / (scale(row) if scale else 1))
              for _, row in rows.iterrows() if is_number(row[column])]
    return [gpus for gpus, _ in picked], [value for _, value in picked]


def scaling_throughput(weak):
    """Weak scaling: train samples/s vs GPUs, with the ideal (linear from the fewest-GPU run) dashed."""
    fig, ax = _figure("Weak scaling: throughput vs GPUs (dashed: ideal linear scaling)", "GPUs (processes)",
                      "train samples/s")
    notes = []
    for i, (label, rows) in enumerate(_series(weak)):
        gpus, rate = _numbers(rows, "train samples/s")
        if not gpus:
            notes.append(f"{label}: no train samples/s yet (see the table's notes)")
            continue
        ax.plot(gpus, rate, "-o", color=f"C{i % 10}", label=label)
        ax.plot(gpus, [rate[0] * n / gpus[0] for n in gpus], "--", color=f"C{i % 10}", label=f"{label}, ideal")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return _finish(fig, ax, notes)


def memory_per_gpu(weak):
    """Weak scaling: peak (solid) and mean (dotted) GPU memory per GPU vs GPUs; flat is what ZeRO 0 promises.
    A series without GPU numbers shows host RSS per process (psrecord's node total / processes), dashed."""
    fig, ax = _figure("Weak scaling: memory per GPU vs GPUs", "GPUs (processes)", "MiB")
    notes = []
    for i, (label, rows) in enumerate(_series(weak)):
        style = {"color": f"C{i % 10}", "marker": "o"}
        gpus, peak = _numbers(rows, "peak GPU MiB per GPU (nvidia-smi)")
        if gpus:
            ax.plot(gpus, peak, "-", label=f"{label}: peak per GPU", **style)
            ax.plot(*_numbers(rows, "mean GPU MiB per GPU (nvidia-smi)"), ":", label=f"{label}: mean per GPU", **style)
            continue
        gpus, rss = _numbers(rows, "peak CPU MiB (psrecord)", scale=lambda row: row["GPUs (processes)"])
        if gpus:
            ax.plot(gpus, rss, "--", label=f"{label}: host RSS per process (no GPU measured)", **style)
        else:
            notes.append(f"{label}: no memory numbers yet (see the table's notes)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return _finish(fig, ax, notes)


def zero_tradeoff(zero):
    """2-GPU ZeRO: peak memory per GPU vs train runtime, one colour per stage, an arrow from the run without
    offload to the run with it. Host RSS stands in (and the axis says so) when no GPU was measured."""
    column, ylabel = "peak GPU MiB per GPU (nvidia-smi)", "peak GPU MiB per GPU (nvidia-smi)"
    if zero is not None and not zero.empty and not zero[column].map(is_number).any():
        column, ylabel = "peak CPU MiB (psrecord)", "peak host RSS MiB (psrecord; no GPU measured)"
    fig, ax = _figure("ZeRO on 2 GPUs: memory vs runtime, without (o) and with (s) offload",
                      "train runtime s (train_runtime)", ylabel)
    notes = []
    if zero is None or zero.empty:
        return _finish(fig, ax, notes)
    runtime, points = "total runtime s (train_runtime)", {}
    for _, row in zero.iterrows():
        if is_number(row[column]) and is_number(row[runtime]):
            points[(row["model"], row["init"], row["subset"]), row["config"]] = (row[runtime], row[column])
        else:
            notes.append(f"{row['config']}: no point ({row[column]}, {row[runtime]})")
    setups = list(dict.fromkeys(setup for setup, _ in points))
    for i, stage in enumerate(("stage1", "stage2", "stage3")):
        for setup in setups:
            ends = [points[setup, config] for config in (stage, f"{stage}_offload") if (setup, config) in points]
            for config, marker in ((stage, "o"), (f"{stage}_offload", "s")):
                if (setup, config) in points:
                    label = config if len(setups) == 1 else f"{config}, {setup_label(setup)}"
                    ax.plot(*[[v] for v in points[setup, config]], marker, color=f"C{i}", markersize=8, label=label)
            if len(ends) == 2:
                ax.annotate("", xy=ends[1], xytext=ends[0], arrowprops={"arrowstyle": "->", "color": f"C{i}"})
    return _finish(fig, ax, notes)


# ---------------------------------------------------------------------------------------------- make it fast

def bench_results(folder):
    """Every benchmark result (benchmarks/bench.py's *.json) in `folder` as one DataFrame: one row per run,
    with the file it came from."""
    frames = []
    for path in sorted(Path(folder).glob("*.json")):
        result = pd.read_json(path, typ="series")
        if "runs" in result:
            frames.append(pd.DataFrame(result["runs"]).assign(benchmark=path.stem))
    if not frames:
        print(f"no benchmark results (*.json from benchmarks/bench.py) in {folder}")
        return pd.DataFrame(columns=["benchmark", "variant", "real_tokens_per_s", "mfu"])
    return pd.concat(frames, ignore_index=True)


def speed_ladder(results, title="real tokens/s per change"):
    """Bar chart of real tokens/s per variant (log scale), MFU written on each bar."""
    fig = Figure(figsize=(9, 3.5))
    ax = fig.subplots()
    done = results.dropna(subset=["real_tokens_per_s"])
    labels = [f"{row.variant}\n({row.benchmark})" for row in done.itertuples()]
    bars = ax.bar(range(len(done)), done["real_tokens_per_s"], color="tab:blue")
    for bar, mfu in zip(bars, done["mfu"]):
        if pd.notna(mfu):
            ax.annotate(f"{mfu * 100:.1f}% MFU", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(done)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("real tokens/s")
    ax.set_title(title)
    fig.tight_layout()
    return fig
