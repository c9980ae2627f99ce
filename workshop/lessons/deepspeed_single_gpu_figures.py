"""Lesson 2's figures: memory over time per configuration (from the run folders) and peak memory as grouped bars
(from the Part 2 table, build_tables(...)["deepspeed_single_gpu_part2"]). A cell without a number gets no bar."""
import textwrap

from matplotlib.figure import Figure

from workshop.lessons import LESSONS, ZERO_CONFIGS as CONFIGS
from workshop.report.zero import config_label
from workshop.logparse import Missing
from workshop.report.cells import is_number
from workshop.report.columns import HOST_PEAK, MODEL_STATES, PEAK_GPU, RESERVED
from workshop.report.figures import as_runs, damaged, legend_all, no_gpu_reason, plot_rss, seconds
from workshop.report.select import config_of, latest_runs, setup_label, setup_of
from workshop.report.shapes import by_run


def zero_memory_timelines(runs):
    """Lesson 2: GPU memory.used (nvidia-smi, top) and host RSS (psrecord, bottom) vs seconds, one colour per
    configuration, so the ZeRO stages and offload choices compare on one figure."""
    chosen, _ = latest_runs(as_runs(runs, LESSONS, "deepspeed_single_gpu"), CONFIGS)
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
        label = config_label(config_of(run)) + (f"\n{setup_label(setup_of(run))}" if several else "")  # 2 lines: fits
        color = f"C{i % 10}"
        if isinstance(run.gpu, Missing):
            if run.gpu.cell == "n/a (no GPU)":
                no_gpu.setdefault(no_gpu_reason(run.gpu), []).append(label)
            else:
                notes.append(f"{label}: no GPU line, {run.gpu.cell}")
        else:
            samples = run.gpu.dropna(subset=["timestamp", "memory_used_mib"])
            samples = samples.assign(seconds=seconds(samples["timestamp"]))
            for n, (index, one_gpu) in enumerate(samples.groupby("index")):
                gpu_ax.plot(one_gpu["seconds"], one_gpu["memory_used_mib"], color=color,
                            label=None if n else label + damaged(run, "gpu_memory.csv"))
        if not plot_rss(cpu_ax, run, label, color=color):
            notes.append(f"{label}: no host RSS line, {run.cpu}")
    if no_gpu:  # a CPU-only classroom sees why the top panel is empty
        gpu_ax.text(0.5, 0.5, "\n".join(textwrap.fill(f"no GPU ({', '.join(names)}): {reason}", 90)
                                        for reason, names in no_gpu.items()),
                    ha="center", va="center", transform=gpu_ax.transAxes, color="grey", fontsize=9)
    return legend_all(fig, [gpu_ax, cpu_ax], notes)


# the engine's model states per process (exact) beside DeepSpeed's estimate: on a CPU, the bars that show ZeRO
ZERO_BARS = [PEAK_GPU, RESERVED, "DeepSpeed estimate MiB (model states)", HOST_PEAK, MODEL_STATES]


def _mib(value):
    if not is_number(value):
        return ""
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"  # bloom-tiny's estimate is under 1 MiB


def zero_peak_bars(part2):
    """Lesson 2: peak memory by configuration as grouped bars, one panel per model and data, from the Part 2 table
    (build_tables(...)["deepspeed_single_gpu_part2"], or None). A cell without a number gets no bar."""
    part2 = by_run(part2)
    if part2 is None or part2.empty:
        fig = Figure(figsize=(9, 3), layout="constrained")
        return legend_all(fig, [fig.add_subplot()], [])
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
        ax.set_xticks(range(len(rows)), [config_label(str(c)) for c in rows["config"]], rotation=20, ha="right")
        ax.set_ylabel("MiB")
        ax.set_title(f"Peak memory by configuration: {setup_label(setup)}", fontsize=11)
        ax.grid(axis="y", alpha=0.3)
    return legend_all(fig, axes, [f"no bars for {c}: no numbers (see the table's notes)"
                                   for c in ZERO_BARS if c not in measured])
