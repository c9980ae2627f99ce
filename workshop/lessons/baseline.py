"""Lesson 1, the baseline (baseline/train.py): its two exercise tables and its figures.

Objective 1 (loss and throughput) and Objective 2 (GPU memory) come one row per run (`--by-run`), and in the
handout's own `| Metric | Your Value |` layout from the latest completed run.
"""

import textwrap

import pandas as pd

from workshop.lessons import LESSONS
from workshop.logparse import Missing, final_summary, read_answer_quality
from workshop.report.cells import (absent, cpu_peak, epoch_label, expected_epochs, gpu_stat, manifest_value,
                                   steps_per_epoch)
from workshop.report.columns import RESERVED_COL, RUN_COL, STATUS_COL, STEADY_SAMPLES, Column, row_of
from workshop.report.engine import Table
from workshop.report.figures import as_runs, damaged, figure, finish, no_gpu_reason, plot_rss, points, seconds
from workshop.report.shapes import latest_completed, metric_table
from workshop.report.speed_cells import timed_steps
from workshop.report.spread import steady_rate

def objective_1(run):
    row = {"run": run.name, "status": run.status}
    events = run.events
    if isinstance(events, Missing):
        for column in ["train loss (last logged)", "train_loss (run mean)",
                       *(f"eval loss (epoch {n})" for n in range(1, expected_epochs(run) + 1)),
                       "train samples/s", "eval samples/s (last eval)", "steps/epoch"]:
            row[column] = events
        return {**row, **answer_scores(run)}
    losses = [e for e in events if "loss" in e]
    evals = [e for e in events if "eval_loss" in e]
    summary = final_summary(events)

    row["train loss (last logged)"] = losses[-1]["loss"] if losses else absent(run, "training loss")
    row["train_loss (run mean)"] = summary.get("train_loss", absent(run, "train_loss")) if summary \
        else absent(run, "final train summary")
    by_label = {epoch_label(e.get("epoch"), i + 1): e["eval_loss"] for i, e in enumerate(evals)}
    for label in range(1, expected_epochs(run) + 1):
        by_label.setdefault(label, None)
    for label in sorted(by_label, key=float):
        value = by_label[label]
        row[f"eval loss (epoch {label})"] = value if value is not None else absent(run, f"eval at epoch {label}")
    row["train samples/s"] = summary.get("train_samples_per_second", absent(run, "train samples/s")) if summary \
        else absent(run, "final train summary")
    row["eval samples/s (last eval)"] = evals[-1].get("eval_samples_per_second", absent(run, "eval samples/s")) \
        if evals else absent(run, "eval")
    row["steps/epoch"] = steps_per_epoch(run, summary)
    if timed_steps(run):  # beside the Trainer's whole-run figure; an older run keeps the handout's rows alone
        row[STEADY_SAMPLES] = steady_rate(run, "samples", "samples/s")
    return {**row, **answer_scores(run)}


def answer_scores(run):
    """{"EM": %, "F1": %} of the fine-tuned model, from answer_quality.json (python -m workshop.answer_quality)."""
    if not run.path.is_dir():
        return {"EM": run.manifest, "F1": run.manifest}  # a bare .out: its marker says there is no run folder
    scores = read_answer_quality(run.path)
    return {"EM": scores, "F1": scores} if isinstance(scores, Missing) else scores


def _gpus(run):
    """'1 x NVIDIA H100 80GB HBM3': how many GPUs of which kind nvidia-smi saw (or why it saw none)."""
    if isinstance(run.gpu, Missing):
        return run.gpu
    names = run.gpu.groupby("index")["name"].first()
    return f"{len(names)} x {names.iloc[0]}" if names.nunique() == 1 else ", ".join(map(str, names))


def _gpu_column(name, stat):
    return Column(name, "MiB", f"nvidia-smi memory.used, {stat} over the run (the busiest GPU)",
                  lambda run: gpu_stat(run, stat))


GPU_PEAK_COL, GPU_MEAN_COL, GPU_MIN_COL = (_gpu_column(f"GPU MiB {stat}", key)
                                           for stat, key in (("peak", "max"), ("mean", "mean"), ("min", "min")))
OBJECTIVE_2_COLUMNS = (
    RUN_COL, STATUS_COL, Column("GPUs", "", "the GPUs nvidia-smi saw", _gpus), GPU_PEAK_COL, GPU_MEAN_COL, GPU_MIN_COL,
    RESERVED_COL, Column("host RSS MiB peak (psrecord)", "MiB", "psrecord's peak RSS of the training", cpu_peak),
    Column("host RSS MiB peak (manifest)", "MiB", "the training's own peak RSS",
           lambda run: manifest_value(run, "peak_memory", "host_peak_rss_mib", what="peak_memory.host_peak_rss_mib")))


def objective_2(run):
    return row_of(run, OBJECTIVE_2_COLUMNS)


def loss_curves(runs):
    """Train loss (solid) and eval loss (dashed, dots) vs optimizer step, one colour per run."""
    fig, ax = figure("Loss vs step: train (solid) and eval (dashed)", "optimizer step", "loss")
    notes = []
    for run in as_runs(runs, LESSONS):
        events = run.events
        if isinstance(events, Missing) or not events:
            notes.append(f"{run.name}: no loss curve, {events or 'no log events'}")
            continue
        per_epoch = steps_per_epoch(run, final_summary(events))
        train = points(events, "loss", per_epoch)
        evals = points(events, "eval_loss", per_epoch)
        if not train[0] and not evals[0]:
            notes.append(f"{run.name}: no loss values with a step ({run.status})")
            continue
        source = "" if run.events_file == "log_history.jsonl" else f", from {run.events_file}"
        label = f"{run.name} ({run.status}{source}){damaged(run, run.events_file)}"
        line = ax.plot(*train, label=f"{label} train")[0] if train[0] else None
        color = line.get_color() if line else None
        if evals[0]:
            ax.plot(*evals, "--o", color=color, markersize=4, label=f"{label} eval")
    return finish(fig, ax, notes)



def gpu_memory_timeline(runs):
    """nvidia-smi memory.used (MiB) vs seconds since the run's first sample, one line per run and GPU.
    A run that had no GPU shows its host RSS (psrecord) instead, dotted, and says why in the title."""
    fig, ax = figure("GPU memory.used (nvidia-smi)", "seconds since the first sample", "MiB")
    notes, no_gpu = [], {}  # reason -> runs
    for run in as_runs(runs, LESSONS):
        gpu = run.gpu
        if isinstance(gpu, Missing):
            if gpu.cell != "n/a (no GPU)":
                notes.append(f"{run.name}: no GPU line, {gpu.cell}")
                continue
            no_gpu.setdefault(no_gpu_reason(gpu), []).append(run.name)
            if plot_rss(ax, run, f"{run.name} host RSS (no GPU)", linestyle=":"):
                continue
            notes.append(f"{run.name}: no GPU, and no host RSS either ({run.cpu})")
            continue
        samples = gpu.dropna(subset=["timestamp", "memory_used_mib"])
        if samples.empty:
            notes.append(f"{run.name}: no GPU line, no timestamped memory.used values")
            continue
        samples = samples.assign(seconds=seconds(samples["timestamp"]))
        for index, one_gpu in samples.groupby("index"):
            name = one_gpu["name"].iloc[0]
            ax.plot(one_gpu["seconds"], one_gpu["memory_used_mib"],
                    label=f"{run.name} GPU {index} ({name}){damaged(run, 'gpu_memory.csv')}")
    if no_gpu:
        # The reason goes in the title: a CPU-only classroom sees why its lines are host memory.
        ax.set_title("\n".join(["GPU memory.used (nvidia-smi); host RSS (psrecord) for runs without a GPU"]
                               + [textwrap.fill(f"no GPU ({', '.join(names)}): {reason}", 100)
                                  for reason, names in no_gpu.items()]), fontsize=9)
    return finish(fig, ax, notes)



def cpu_memory_timeline(runs):
    """Host RSS (MiB, the training and its children, from psrecord) vs seconds since psrecord started."""
    fig, ax = figure("Host memory: RSS of the training and its children (psrecord)",
                      "seconds since the logger started", "MiB")
    notes = []
    for run in as_runs(runs, LESSONS):
        if not plot_rss(ax, run, f"{run.name} ({run.status})"):
            notes.append(f"{run.name}: no RSS line, {run.cpu}")
    return finish(fig, ax, notes)


# ---------------------------------------------------------------------------------------------- the handout's layout
OBJECTIVE_1 = [("Train Loss (Final)", "train_loss (run mean)"),
               ("Eval Loss (Epoch 1)", "eval loss (epoch 1)"),
               ("Eval Loss (Epoch 2)", "eval loss (epoch 2)"),
               ("Eval Loss (Epoch 3)", "eval loss (epoch 3)"),
               ("Training Speed (samples/sec)", "train samples/s"),
               ("Evaluation Speed (samples/sec)", "eval samples/s (last eval)"),
               ("Steps per Epoch", "steps/epoch")]
# beside the handout's rows where the run timed its steps: the steady rate with its interval (the Trainer's
# "Training Speed" is the whole run's, warm-up and evaluation pauses included, one number without a spread)
OBJECTIVE_1_EXTRA = [("Steady Training Speed (samples/sec, median, 95% interval)", STEADY_SAMPLES)]
OBJECTIVE_2 = [("Peak GPU Memory Usage", GPU_PEAK_COL),
               ("Mean GPU Memory Usage", GPU_MEAN_COL),
               ("Minimum GPU Memory Usage", GPU_MIN_COL)]


def handout(key, title, metrics, value_header, extra=()):
    def shape(df, runs):
        row, note = latest_completed(df, runs, [column for _, column in metrics])
        metrics_shown = metrics + [(label, column) for label, column in extra
                                   if pd.notna(row.get(column))]  # the run timed its steps
        notes = [note]
        if key.endswith("2") and not isinstance(row["host RSS MiB peak (psrecord)"], str):
            notes.append(f"host memory for comparison: peak RSS {row['host RSS MiB peak (psrecord)']:.0f} MiB "
                         "(psrecord, the training and its children)")
        return [(key, title, metric_table(row, metrics_shown, value_header), [], notes)]
    return shape


TABLES = (
    Table("baseline_objective_1", "Baseline, objective 1: loss and throughput", objective_1,
          handout=handout("baseline_objective_1", "Objective 1", OBJECTIVE_1, "Your Value", OBJECTIVE_1_EXTRA)),
    Table("baseline_objective_2", "Baseline, objective 2: memory", objective_2,
          handout=handout("baseline_objective_2", "Objective 2", OBJECTIVE_2, "Your Value (MiB)")),
)
