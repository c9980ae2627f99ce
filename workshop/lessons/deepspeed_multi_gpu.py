"""Lesson 3, DeepSpeed on several GPUs (deepspeed_multi_gpu/): weak scaling, ZeRO on 2 GPUs and what offloading
saves, and their quiz answers (figures: deepspeed_multi_gpu_figures.py).
"""

import re

import pandas as pd

from workshop.lessons import ZERO_2GPU, ZERO_CONFIGS
from workshop.lessons.deepspeed_single_gpu import config_label, lowest_peak_answers, zero_row
from workshop.logparse import Missing, final_summary
from workshop.report.cells import (absent, change, gpu_mean_per_gpu, is_number, manifest_of, percent_spread,
                                   summary_value)
from workshop.report.columns import (HOST_MEAN, HOST_PEAK, MEAN_PER_GPU, PEAK_GPU, PEAK_PER_GPU, RESERVED, RUNTIME,
                                     TRAIN_RATE)
from workshop.report.engine import Table
from workshop.report.select import by_setup, config_of, latest_runs, setup_of, world_of
from workshop.report.shapes import NOT_RUN, keep_by_run, metric_columns, model_and_data, sources_note

# Two experiments share the lesson: weak scaling (the same samples per GPU on more GPUs; slurm/
# multi_gpu_weak_scaling.slurm) and ZeRO on 2 GPUs (stages 1-3 with and without offload; slurm/multi_gpu_zero.slurm).
# Both tables measure the same things per run, lesson 2's columns plus the Trainer's throughput and losses.



def is_zero_2gpu(run):
    """A run of the 2-GPU ZeRO comparison: one of its six configs on 2 processes, not part of a weak-scaling sweep."""
    return config_of(run) in ZERO_2GPU and world_of(run) == 2 and not run.name.startswith("weak_scaling")


def multi_gpu_row(run):
    """The ten measurements of a lesson-3 run (the weak-scaling and the 2-GPU ZeRO tables share them)."""
    lesson2 = zero_row(run)
    world, subset = world_of(run), manifest_of(run).get("subset_size")
    events = [] if isinstance(run.events, Missing) else run.events
    summary = final_summary(events)
    evals = [e for e in events if "eval_loss" in e]
    last_eval = evals[-1] if evals else None
    row = {key: lesson2[key] for key in ("model", "init", "subset", "config", "run", "status")}
    row["GPUs (processes)"] = world
    row["nodes"] = manifest_of(run).get("nodes") or 1  # older manifests have no count: one node
    row["samples per GPU"] = subset // world if isinstance(subset, int) else absent(run, "subset_size", "manifest.json")
    row[RUNTIME] = lesson2[RUNTIME]
    row[TRAIN_RATE] = summary_value(run, summary, "train_samples_per_second", TRAIN_RATE)
    row["train steps/s"] = summary_value(run, summary, "train_steps_per_second", "train steps/s")
    row["train_loss (run mean)"] = summary_value(run, summary, "train_loss", "train_loss")
    row["eval loss (last eval)"] = summary_value(run, last_eval, "eval_loss", "eval loss")
    row["eval samples/s (last eval)"] = summary_value(run, last_eval, "eval_samples_per_second", "eval samples/s")
    row[PEAK_PER_GPU] = lesson2[PEAK_GPU]  # the busiest GPU's peak: it sets the limit
    row[MEAN_PER_GPU] = gpu_mean_per_gpu(run)
    row[RESERVED] = lesson2[RESERVED]
    row[HOST_PEAK] = lesson2[HOST_PEAK]
    row[HOST_MEAN] = run.cpu if isinstance(run.cpu, Missing) else float(run.cpu["real_mib"].mean())
    row["wall s (manifest)"] = lesson2["wall s (manifest)"]
    return row


MEMORY_NOTE = (f"`{PEAK_PER_GPU}`: the largest memory.used of the busiest GPU (it sets the limit); "
               f"`{MEAN_PER_GPU}`: each GPU's samples averaged, then the GPUs averaged. "
               f"`{HOST_PEAK}` is the whole node: every rank's process together.")


def weak_scaling(runs):
    chosen, notes = latest_runs([run for run in runs if not is_zero_2gpu(run)], ZERO_CONFIGS)
    notes += [note for run in chosen for note in run.notes] + [MEMORY_NOTE]
    rows = sorted((multi_gpu_row(run) for run in chosen),
                  key=lambda r: (r["model"], r["init"], str(r["samples per GPU"]), r["config"], r["nodes"],
                                 r["GPUs (processes)"]))
    answers = []
    groups = {}
    for row in rows:
        groups.setdefault((row["model"], row["init"], str(row["samples per GPU"]), row["config"]), []).append(row)
    for (model, init, per_gpu, config), group in groups.items():
        label = f"{model} ({init}, {per_gpu} samples per GPU, {config})"
        measured = [row for row in group if is_number(row[RUNTIME])]
        base = measured[0] if measured else None
        for row in group:
            row["efficiency (fewest-GPU runtime / runtime)"] = round(base[RUNTIME] / row[RUNTIME], 3) \
                if base and row in measured else Missing("n/a (no runtime)", "a run without train_runtime has no efficiency")
        if len(measured) > 1:
            last = measured[-1]
            answers.append(f"{label}: {base['GPUs (processes)']} -> {last['GPUs (processes)']} GPUs took "
                           f"{change(last[RUNTIME], base[RUNTIME])}; efficiency {base[RUNTIME] / last[RUNTIME]:.2f}.")
        answers.append(constant_memory_answer(label, group))
    return rows, answers, notes


def constant_memory_answer(label, group):
    """The quiz: is peak memory per GPU constant as GPUs are added? Within 5% across the GPU counts counts as yes.
    Without GPU numbers, host RSS per process (psrecord's node total / processes) stands in, and says so."""
    column, what = PEAK_PER_GPU, "peak GPU memory per GPU (nvidia-smi)"
    if sum(is_number(row[column]) for row in group) < 2:
        column, what = HOST_PEAK, "host RSS per process (psrecord / processes), as no GPU was measured"
    points = sorted((row["GPUs (processes)"], row[column] / (1 if column == PEAK_PER_GPU else row["GPUs (processes)"]))
                    for row in group if is_number(row[column]))
    if len({gpus for gpus, _ in points}) < 2:
        return (f"{label}: is peak memory per GPU constant as GPUs are added? not answerable yet: measured at "
                f"{', '.join(str(g) for g, _ in points) or 'no'} GPU count(s); run at least two "
                "(bash slurm/submit_weak_scaling.sh).")
    values = [mib for _, mib in points]
    spread = percent_spread(values)
    shown = ", ".join(f"{mib:.0f} MiB at {gpus}" for gpus, mib in points)
    verdict = "yes, about constant" if spread <= 5 else \
        ("no, it grows" if values[-1] > values[0] else "no, it shrinks")
    return f"{label}: is {what} constant as GPUs are added? {verdict} ({shown}; spread {spread:.1f}% of the smallest, 5% counts as constant)."


def zero_2gpu_runs(runs):
    chosen, notes = latest_runs([run for run in runs if is_zero_2gpu(run)], ZERO_CONFIGS)
    order = {name: i for i, name in enumerate(ZERO_2GPU)}
    chosen.sort(key=lambda run: (setup_of(run), order[config_of(run)]))
    return chosen, notes + [note for run in chosen for note in run.notes]


def zero_2gpu(runs):
    chosen, notes = zero_2gpu_runs(runs)
    rows = [multi_gpu_row(run) for run in chosen]
    missing = [config for config in ZERO_2GPU if config not in {row["config"] for row in rows}]
    if rows and missing:
        notes.append(f"no run yet of {', '.join(missing)}: `CONFIGS=\"{' '.join(missing)}\" "
                     "bash slurm/submit_zero_2gpu.sh` submits them")
    return rows, lowest_peak_answers(rows, PEAK_PER_GPU), notes + [MEMORY_NOTE]


SAVING = "GPU memory saving % (peak per GPU)"
SLOWER = "runtime change % (train_runtime)"
HOST_CHANGE = "host RSS change % (psrecord)"


def zero_savings(runs):
    """Per model and data and stage: offload against the same stage without, from the 2-GPU ZeRO table's runs."""
    chosen, notes = zero_2gpu_runs(runs)
    rows = []
    for setup, group in by_setup([multi_gpu_row(run) for run in chosen]).items():
        by_config = {row["config"]: row for row in group}
        for stage in ("stage1", "stage2", "stage3"):
            plain, offload = by_config.get(stage), by_config.get(f"{stage}_offload")
            if plain is None and offload is None:
                continue
            row = dict(zip(("model", "init", "subset"), setup), stage=stage,
                       run=" vs ".join(r["run"] for r in (plain, offload) if r))  # names the run(s) in the notes
            row[SAVING] = relative(plain, offload, PEAK_PER_GPU, stage, saving=True)
            row[SLOWER] = relative(plain, offload, RUNTIME, stage)
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
METRICS = [("Train Runtime (sec)", RUNTIME), ("Steps/sec", "train steps/s"), ("Samples/sec", TRAIN_RATE),
           ("Train Loss", "train_loss (run mean)"), ("Eval Loss (final)", "eval loss (last eval)"),
           ("Eval Speed (samples/sec)", "eval samples/s (last eval)"), ("Peak GPU Memory (MiB)", PEAK_PER_GPU),
           ("Average GPU Memory (MiB)", MEAN_PER_GPU)]
CPU_METRICS = [("Peak CPU Memory (MiB)", HOST_PEAK), ("Average CPU Memory (MiB)", HOST_MEAN)]
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
        picked = [(f"{n} GPUs", by_gpus.get(n)) for n in gpus]
        shaped = keep_by_run(metric_columns(picked, METRICS), df)
        answers = [constant_memory_answer(label, [row for _, row in rows.sort_values("GPUs (processes)").iterrows()])]
        out.append(("deepspeed_multi_gpu_weak_scaling" + suffix, f"Part 1: weak scaling, {label}", shaped,
                    answers, [sources_note(picked)] + ([f"`{NOT_RUN}`: no run at that GPU count yet "
                                                        "(bash slurm/submit_weak_scaling.sh runs them)"]
                                                       if len(by_gpus) < len(gpus) else [])))
    return out


def _pct(new, old):
    return round((new - old) / old * 100, 1) if is_number(new) and is_number(old) and old else None


def offload_answers(shaped, label):
    """The quiz: how offloading changes train runtime and samples/s, beside the GPU memory it saves."""
    answers = []
    for stage in (1, 2, 3):
        plain, offload = f"Stage {stage}", f"Stage {stage} + offload"
        if plain not in shaped or offload not in shaped:
            continue
        values = {metric: (a, b) for metric, a, b in zip(shaped["Metric"], shaped[plain], shaped[offload])}
        runtime, rate, memory = (_pct(b, a) for a, b in (values["Train Runtime (sec)"], values["Samples/sec"],
                                                          values["Peak GPU Memory (MiB)"]))
        if runtime is None or rate is None:
            answers.append(f"{label}, stage {stage}: not answerable yet: both runs need a train runtime.")
            continue
        host = _pct(*values["Peak CPU Memory (MiB)"][::-1])
        memory = f"peak GPU memory by {memory:+.1f}%" if memory is not None else \
            (f"peak host memory by {host:+.1f}% (no GPU memory measured)" if host is not None else "no memory measured")
        answers.append(f"{label}, stage {stage}: offloading changed train runtime by {runtime:+.1f}%, samples/s "
                       f"by {rate:+.1f}% and {memory}.")
    return answers


def zero_handout(df, runs):
    out = []
    for label, rows, suffix in _groups(df, ["model", "init", "subset"]):
        by_config = {row["config"]: row for _, row in rows.iterrows()}
        picked = [(config_label(c), by_config.get(c)) for c in ZERO_2GPU]
        shaped = keep_by_run(metric_columns(picked, METRICS + CPU_METRICS), df)
        missing = [c for c in ZERO_2GPU if c not in by_config]
        out.append(("deepspeed_multi_gpu_zero_2gpu" + suffix, f"Part 2: ZeRO stages on 2 GPUs, {label}", shaped,
                    offload_answers(shaped, label), [sources_note(picked)] + (
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
        if any(isinstance(value, str) for value in shaped.iloc[:, 1:].to_numpy().ravel()):
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
