"""Lesson 3, DeepSpeed on several GPUs (deepspeed_multi_gpu/): weak scaling, ZeRO on 2 GPUs and what offloading
saves, and their quiz answers (figures: deepspeed_multi_gpu_figures.py).
"""

import re

import pandas as pd

from workshop.lessons import ZERO_2GPU, ZERO_CONFIGS
from workshop.lessons.deepspeed_multi_gpu_answers import constant_memory_answer, efficiency_answer
from workshop.logparse import Missing
from workshop.report.cells import is_number
from workshop.report.columns import (EVAL_LOSS_COL, EVAL_RATE_COL, HOST_MEAN_COL, HOST_PEAK, HOST_PEAK_COL,
                                     MEAN_PER_GPU, MEAN_PER_GPU_COL, MODEL_STATES_COL, MULTI_GPU_COLUMNS,
                                     PEAK_PER_GPU, PEAK_PER_GPU_COL, RUNTIME, RUNTIME_COL, STEADY_SAMPLES_COL,
                                     STEADY_STEP_COL, STEPS_RATE_COL, TRAIN_LOSS_COL, TRAIN_RATE_COL,
                                     rows_of)
from workshop.report.engine import Table
from workshop.report.select import by_setup, config_of, latest_runs, setup_of, world_of
from workshop.report.shapes import NOT_RUN, keep_by_run, metric_columns, model_and_data, sources_note
from workshop.report.zero import (config_label, lowest_peak_answers, offload_answers, runs_in_table_order,
                                  short_clause, steady_clause)

# Two experiments share the lesson: weak scaling (the same samples per GPU on more GPUs; slurm/
# multi_gpu_weak_scaling.slurm) and ZeRO on 2 GPUs (stages 1-3 with and without offload; slurm/multi_gpu_zero.slurm).
# Both tables measure the same things per run (report/columns.py's MULTI_GPU_COLUMNS): lesson 2's columns plus the
# Trainer's throughput and losses.


def is_zero_2gpu(run):
    """A run of the 2-GPU ZeRO comparison: one of its six configs on 2 processes, not part of a weak-scaling sweep."""
    return config_of(run) in ZERO_2GPU and world_of(run) == 2 and not run.name.startswith("weak_scaling")


MEMORY_NOTE = (f"`{PEAK_PER_GPU}`: the largest memory.used of the busiest GPU (it sets the limit); "
               f"`{MEAN_PER_GPU}`: each GPU's samples averaged, then the GPUs averaged. "
               f"`{HOST_PEAK}` is the whole node: every rank's process together.")


EFFICIENCY = "efficiency (fewest-GPU runtime / runtime)"


def _series_key(row):
    return row["model"], row["init"], str(row["samples per GPU"]), row["config"]


def weak_scaling(runs):
    """The by-run rows with each run's efficiency against the fewest-GPU run of its series; the quiz answers are
    weak_handout's, computed there once."""
    chosen, notes = latest_runs([run for run in runs if not is_zero_2gpu(run)], ZERO_CONFIGS)
    notes += [note for run in chosen for note in run.notes] + [MEMORY_NOTE]
    rows = sorted(rows_of(chosen, MULTI_GPU_COLUMNS), key=lambda r: (*_series_key(r), r["nodes"], r["GPUs (processes)"]))
    groups = {}
    for row in rows:
        groups.setdefault(_series_key(row), []).append(row)
    for group in groups.values():
        measured = [row for row in group if is_number(row[RUNTIME])]
        for row in group:
            row[EFFICIENCY] = round(measured[0][RUNTIME] / row[RUNTIME], 3) if row in measured else \
                Missing("n/a (no runtime)", "a run without train_runtime has no efficiency")
    return rows, [], notes


def zero_2gpu_runs(runs):
    chosen, notes = latest_runs([run for run in runs if is_zero_2gpu(run)], ZERO_CONFIGS)
    order = {name: i for i, name in enumerate(ZERO_2GPU)}
    chosen.sort(key=lambda run: (setup_of(run), order[config_of(run)]))
    return chosen, notes + [note for run in chosen for note in run.notes]


def zero_2gpu(runs):
    chosen, notes = zero_2gpu_runs(runs)
    rows = rows_of(chosen, MULTI_GPU_COLUMNS)
    missing = [config for config in ZERO_2GPU if config not in {row["config"] for row in rows}]
    if rows and missing:
        notes.append(f"no run yet of {', '.join(missing)}: `CONFIGS=\"{' '.join(missing)}\" "
                     "bash slurm/submit_zero_2gpu.sh` submits them")
    return rows, [], notes + [MEMORY_NOTE]  # the answers: zero_handout's


SAVING = "GPU memory saving % (peak per GPU)"
TOO_SHORT = "n/a (too few timed steps)"
WITHIN_NOISE = "n/a (within noise)"
SLOWER = "runtime change % (train_runtime)"
HOST_CHANGE = "host RSS change % (psrecord)"


def zero_savings(runs):
    """Per model and data and stage: offload against the same stage without, from the 2-GPU ZeRO table's runs."""
    chosen, notes = zero_2gpu_runs(runs)
    rows, by_run = [], {run.name: run for run in chosen}
    for setup, group in by_setup(rows_of(chosen, MULTI_GPU_COLUMNS)).items():
        by_config = {row["config"]: row for row in group}
        for stage in ("stage1", "stage2", "stage3"):
            plain, offload = by_config.get(stage), by_config.get(f"{stage}_offload")
            if plain is None and offload is None:
                continue
            row = dict(zip(("model", "init", "subset"), setup), stage=stage,
                       run=" vs ".join(r["run"] for r in (plain, offload) if r))  # names the run(s) in the notes
            row[SAVING] = relative(plain, offload, PEAK_PER_GPU, stage, saving=True)
            row[SLOWER] = relative(plain, offload, RUNTIME, stage)
            short = short_clause((name, by_run.get(r["run"]))
                                 for name, r in ((stage, plain), (f"{stage}_offload", offload)) if r)
            if short and is_number(row[SLOWER]):  # the answer refuses this percentage: so does its cell
                row[SLOWER] = Missing(TOO_SHORT, f"{short}: a whole run of that length is mostly warm-up")
            elif is_number(row[SLOWER]) and steady_clause((stage, plain), (f"{stage}_offload", offload))[0] is False:
                row[SLOWER] = Missing(WITHIN_NOISE, "the steady s/step intervals overlap (the answers give them)")
            row[HOST_CHANGE] = relative(plain, offload, HOST_PEAK, stage)
            for which, source in (("no-offload", plain), ("offload", offload)):  # the handout's absolute columns
                none = Missing(f"n/a (no {stage}{'_offload' if source is offload else ''} run)")
                row[f"{which} GPU MiB"] = source[PEAK_PER_GPU] if source else none
                row[f"{which} runtime s"] = source[RUNTIME] if source else none
            rows.append(row)
    notes += [f"`{SAVING}` = (no-offload - offload) / no-offload x 100 of `{PEAK_PER_GPU}`: positive means "
              "offloading freed GPU memory.",
              f"`{SLOWER}` = (offload - no-offload) / no-offload x 100 of `{RUNTIME}`: positive means offloading "
              "made the training slower.",
              f"`{HOST_CHANGE}` = (offload - no-offload) / no-offload x 100 of `{HOST_PEAK}`: where the offloaded "
              "states went."]
    return rows, [], notes


def relative(plain, offload, column, stage, saving=False):
    """The percentage of the savings table, or the marker saying which run or value is missing."""
    for config, row in ((stage, plain), (f"{stage}_offload", offload)):
        if row is None:
            return Missing(f"n/a (no {config} run)", "the comparison needs both runs of the stage")
        if not is_number(row[column]):
            return Missing(f"n/a ({config}: {row[column]})", "the comparison needs a number from both runs; "
                           "the ZeRO table's notes say why one is missing")
    before, after = plain[column], offload[column]
    if not before:
        return Missing("n/a (zero baseline)", "a no-offload value of 0 gives no percentage")
    return round(((before - after) if saving else (after - before)) / before * 100, 1)


# ---------------------------------------------------------------------------------------------- the handout's layout
METRICS = [("Train Runtime (sec)", RUNTIME_COL), ("Steps/sec", STEPS_RATE_COL), ("Samples/sec", TRAIN_RATE_COL),
           ("Train Loss", TRAIN_LOSS_COL), ("Eval Loss (final)", EVAL_LOSS_COL),
           ("Eval Speed (samples/sec)", EVAL_RATE_COL), ("Peak GPU Memory (MiB)", PEAK_PER_GPU_COL),
           ("Average GPU Memory (MiB)", MEAN_PER_GPU_COL)]
CPU_METRICS = [("Peak CPU Memory (MiB)", HOST_PEAK_COL), ("Average CPU Memory (MiB)", HOST_MEAN_COL)]
# Beside the handout's rows where some run records them: steady figures with their intervals, model states.
OPTIONAL_METRICS = [("Steady s/step (median, 95% interval)", STEADY_STEP_COL),
                    ("Steady samples/s (median, 95% interval)", STEADY_SAMPLES_COL),
                    ("Model States per Process (MiB, engine)", MODEL_STATES_COL)]
HANDOUT_GPUS = (2, 4, 6, 8)
SAVINGS_HEADER = ["Stage", "GPU Mem (No Offload)", "GPU Mem (Offload)", "Mem Savings (%)",
                  "Train Runtime (No Offload)", "Train Runtime (Offload)", "Runtime Δ (%)"]


def _groups(df, keys):
    """(label, rows, key suffix) per model-and-data group: the first keeps the table's key (the notebooks show it),
    the others are "<key> [2]", "<key> [3]"."""
    groups = list(df.groupby([df[k].astype(str) for k in keys], sort=False))
    labels = [model_and_data(*values[:3]) for values, _ in groups]
    if len(keys) > 3:  # weak scaling: the subset is per GPU, and the config is part of the series
        labels = [f"{label} per GPU, {config_label(values[3])}" for label, (values, _) in zip(labels, groups)]
    return [(label, rows, "" if n == 0 else f" [{n + 1}]") for n, (label, (_, rows)) in enumerate(zip(labels, groups))]


def weak_handout(df, runs):
    out = []
    for label, rows, suffix in _groups(df, ["model", "init", "samples per GPU", "config"]):
        by_gpus = {int(row["GPUs (processes)"]): row for _, row in rows.iterrows()}
        gpus = sorted(set(HANDOUT_GPUS) | set(by_gpus))
        picked = [(f"{n} GPU{'s' if n != 1 else ''}", by_gpus.get(n)) for n in gpus]
        shaped = keep_by_run(metric_columns(picked, _shown_metrics(METRICS, df)), df)
        ordered = rows.sort_values("GPUs (processes)")
        group = [row for _, row in ordered.iterrows()]
        answers = [constant_memory_answer(label, group) + efficiency_answer(label, group,
                                                                            runs_in_table_order(ordered, runs))]
        out.append(("deepspeed_multi_gpu_weak_scaling" + suffix, f"Part 1: weak scaling, {label}", shaped,
                    answers, [sources_note(picked)] + ([f"`{NOT_RUN}`: no run at that GPU count yet "
                                                        "(bash slurm/submit_weak_scaling.sh runs them)"]
                                                       if len(by_gpus) < len(gpus) else [])))
    return out


def _shown_metrics(metrics, df):
    """The handout's metrics, then each optional one (steady figures, model states) some run of `df` records."""
    return metrics + [(label, column) for label, column in OPTIONAL_METRICS if column.name in df]


def zero_handout(df, runs):
    out = []
    by_run = {run.name: run for run in runs}
    for label, rows, suffix in _groups(df, ["model", "init", "subset"]):
        by_config = {row["config"]: row for _, row in rows.iterrows()}
        picked = [(config_label(c), by_config.get(c)) for c in ZERO_2GPU]
        shaped = keep_by_run(metric_columns(picked, _shown_metrics(METRICS + CPU_METRICS, df)), df)
        missing = [c for c in ZERO_2GPU if c not in by_config]
        labelled = [dict(row, config=config_label(row["config"])) for _, row in rows.iterrows()]
        answers = offload_answers(by_config, by_run, label) + lowest_peak_answers(
            labelled, PEAK_PER_GPU, label=lambda setup: label, runs=by_run)
        out.append(("deepspeed_multi_gpu_zero_2gpu" + suffix, f"Part 2: ZeRO stages on 2 GPUs, {label}", shaped,
                    answers, [sources_note(picked)] + (
                        [f"`{NOT_RUN}`: `CONFIGS=\"{' '.join(missing)}\" bash slurm/submit_zero_2gpu.sh` runs them"]
                        if missing else [])))
    return out


def _inner(cell):
    """`n/a (stage2: n/a (no GPU))` reads `n/a (no GPU)` in the handout's table, whose columns name the stage."""
    found = re.fullmatch(r"n/a \(stage\d(?:_offload)?: (.*)\)", cell) if isinstance(cell, str) else None
    return found.group(1) if found else cell


def savings_handout(df, runs):
    out = []
    for label, rows, suffix in _groups(df, ["model", "init", "subset"]):
        shaped = pd.DataFrame([[f"Stage {row['stage'][-1]}", *(_inner(row[c]) for c in (
            "no-offload GPU MiB", "offload GPU MiB", SAVING, "no-offload runtime s", "offload runtime s", SLOWER))]
            for _, row in rows.iterrows()], columns=SAVINGS_HEADER)
        shaped.attrs["runs"] = set()  # its cells' markers are the 2-GPU ZeRO table's, explained there
        notes = ["Mem Savings (%) = (GPU Mem No Offload - GPU Mem Offload) / GPU Mem No Offload x 100",
                 "Runtime Δ (%) = (Runtime Offload - Runtime No Offload) / Runtime No Offload x 100"]
        if (shaped["Runtime Δ (%)"] == TOO_SHORT).any():  # the by-run notes are not shown here: say why
            notes.append(f"`{TOO_SHORT}`: the runs timed too few steps for a steady state, so their whole-run "
                         "runtimes (mostly warm-up) give no percentage; the runtimes are shown as measured")
        if (shaped["Runtime Δ (%)"] == WITHIN_NOISE).any():
            notes.append(f"`{WITHIN_NOISE}`: the pair's steady seconds per step lie within each other's 95% intervals "
                         "(the answers under the 2-GPU ZeRO table), so the whole runs' percentage would be noise")
        if any(isinstance(value, str) and value not in (TOO_SHORT, WITHIN_NOISE)
               for value in shaped.iloc[:, 1:].to_numpy().ravel()):
            notes.append("a cell without a number: a run or a value is missing; the 2-GPU ZeRO table's notes say why")
        out.append(("deepspeed_multi_gpu_zero_savings" + suffix, f"Part 2: what offloading saves and costs, {label}",
                    shaped, [], notes))
    return out


TABLES = (
    Table("deepspeed_multi_gpu_weak_scaling", "Weak scaling: same samples per GPU, more GPUs", weak_scaling,
          each_run=False, handout=weak_handout),
    Table("deepspeed_multi_gpu_zero_2gpu", "ZeRO on 2 GPUs: stages 1-3, with and without offload", zero_2gpu,
          each_run=False, handout=zero_handout),
    Table("deepspeed_multi_gpu_zero_savings", "ZeRO on 2 GPUs: what offloading saves and costs", zero_savings,
          each_run=False, handout=savings_handout),
)
