"""Lesson 3's figures, from its tables (build_tables(...)["deepspeed_multi_gpu_weak_scaling"] / [".._zero_2gpu"]):
one line per series (model, init, samples per GPU and config). A cell without a number gets no point."""

from workshop.report.zero import config_label
from workshop.report.cells import is_number
from workshop.report.columns import HOST_PEAK, MEAN_PER_GPU, MODEL_STATES, PEAK_PER_GPU, RUNTIME, TRAIN_RATE
from workshop.report.figures import figure, finish
from workshop.report.select import setup_label
from workshop.report.shapes import by_run


def _series(weak):
    """(label, rows sorted by GPU count) per weak-scaling series that has at least one row."""
    weak = by_run(weak)
    if weak is None or weak.empty:
        return []
    keys = ["model", "init", "samples per GPU", "config"]
    return [(f"{model} ({init}, {per_gpu}/GPU, {config_label(config)})", rows.sort_values("GPUs (processes)"))
            for (model, init, per_gpu, config), rows in weak.astype({"samples per GPU": str}).groupby(keys, sort=False)]


def _numbers(rows, column, scale=None):
    """(GPU counts, values) of the rows whose `column` holds a number; `scale(row)` divides each value."""
    picked = [(row["GPUs (processes)"], row[column] / (scale(row) if scale else 1))
              for _, row in rows.iterrows() if is_number(row[column])]
    return [gpus for gpus, _ in picked], [value for _, value in picked]


def scaling_throughput(weak):
    """Weak scaling: train samples/s vs GPUs, with the ideal (linear from the fewest-GPU run) dashed."""
    fig, ax = figure("Weak scaling: throughput vs GPUs (dashed: ideal linear scaling)", "GPUs (processes)",
                      TRAIN_RATE)
    notes = []
    for i, (label, rows) in enumerate(_series(weak)):
        gpus, rate = _numbers(rows, TRAIN_RATE)
        if not gpus:
            notes.append(f"{label}: no train samples/s yet (see the table's notes)")
            continue
        ax.plot(gpus, rate, "-o", color=f"C{i % 10}", label=label)
        ax.plot(gpus, [rate[0] * n / gpus[0] for n in gpus], "--", color=f"C{i % 10}", label=f"{label}, ideal")
    _gpu_axis(ax)
    return finish(fig, ax, notes)


def _gpu_axis(ax):
    """Ticks at the GPU counts that were run, the axis from half a step before the first to after the last: one run
    at 2 processes gets an axis around 2, not 1.9 to 2.1; runs at 1 and 2 get ticks at 1 and 2."""
    counts = sorted({int(x) for line in ax.lines for x in line.get_xdata()})
    if counts:
        ax.set_xticks(counts)
        ax.set_xlim(min(counts) - 0.5, max(counts) + 0.5)


def memory_per_gpu(weak):
    """Weak scaling: peak (solid) and mean (dotted) GPU memory per GPU vs GPUs; flat is what ZeRO 0 promises.
    A series without GPU numbers shows the engine's model states per process (dash-dot) where recorded and host RSS
    per process (psrecord's node total / processes, dashed)."""
    fig, ax = figure("Weak scaling: memory per GPU vs GPUs", "GPUs (processes)", "MiB")
    notes = []
    for i, (label, rows) in enumerate(_series(weak)):
        style = {"color": f"C{i % 10}", "marker": "o"}
        gpus, peak = _numbers(rows, PEAK_PER_GPU)
        if gpus:
            ax.plot(gpus, peak, "-", label=f"{label}: peak per GPU", **style)
            ax.plot(*_numbers(rows, MEAN_PER_GPU), ":", label=f"{label}: mean per GPU", **style)
            continue
        if MODEL_STATES in rows:  # on a CPU the engine's exact model states per process show ZeRO's sharding
            gpus, states = _numbers(rows, MODEL_STATES)
            if gpus:
                ax.plot(gpus, states, "-.", label=f"{label}: model states per process (engine; no GPU)", **style)
        gpus, rss = _numbers(rows, HOST_PEAK, scale=lambda row: row["GPUs (processes)"])
        if gpus:
            ax.plot(gpus, rss, "--", label=f"{label}: host RSS per process (no GPU measured)", **style)
        else:
            notes.append(f"{label}: no memory numbers yet (see the table's notes)")
    _gpu_axis(ax)
    return finish(fig, ax, notes)


def zero_tradeoff(zero):
    """2-GPU ZeRO: peak memory per GPU vs train runtime, one colour per stage, an arrow from the run without
    offload to the run with it. Host RSS stands in (and the axis says so) when no GPU was measured."""
    zero = by_run(zero)
    column, ylabel = PEAK_PER_GPU, PEAK_PER_GPU
    if zero is not None and not zero.empty and not zero[column].map(is_number).any():
        column, ylabel = HOST_PEAK, "peak host RSS MiB (psrecord; no GPU measured)"
    fig, ax = figure("ZeRO on 2 GPUs: memory vs runtime, without (o) and with (s) offload",
                      "train runtime s (train_runtime)", ylabel)
    notes = []
    if zero is None or zero.empty:
        return finish(fig, ax, notes)
    runtime, points = RUNTIME, {}
    for _, row in zero.iterrows():
        if is_number(row[column]) and is_number(row[runtime]):
            points[(row["model"], row["init"], row["subset"]), row["config"]] = (row[runtime], row[column])
        else:
            notes.append(f"{config_label(row['config'])}: no point ({row[column]}, {row[runtime]})")
    setups = list(dict.fromkeys(setup for setup, _ in points))
    for i, stage in enumerate(("stage1", "stage2", "stage3")):
        for setup in setups:
            ends = [points[setup, config] for config in (stage, f"{stage}_offload") if (setup, config) in points]
            for config, marker in ((stage, "o"), (f"{stage}_offload", "s")):
                if (setup, config) in points:
                    label = config_label(config) if len(setups) == 1 else \
                        f"{config_label(config)}, {setup_label(setup)}"
                    ax.plot(*[[v] for v in points[setup, config]], marker, color=f"C{i}", markersize=8, label=label)
            if len(ends) == 2:
                ax.annotate("", xy=ends[1], xytext=ends[0], arrowprops={"arrowstyle": "->", "color": f"C{i}"})
    return finish(fig, ax, notes)
