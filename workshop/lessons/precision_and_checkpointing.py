"""Lesson 5, precision and gradient checkpointing (precision_and_checkpointing/train.py, slurm/precision.slurm,
slurm/checkpointing.slurm, slurm/max_batch.slurm): two comparing tables and their quiz answers.

The handout has no such tables, so each has one layout. `precision`: per model and ZeRO stage (or the plain
Trainer), fp32 vs fp16 vs bf16 throughput, peak GPU memory and final eval loss, from the latest run of each,
checkpointing off. `gradient_checkpointing`: per model, stage and precision, the same runs with checkpointing off
and on (memory saved, time lost per step) and the largest micro-batch workshop.max_batch found with and without.
The speed figures are make it fast's (workshop/speed.py in the manifest), read by the same row function.
"""

import json
import re

from workshop.logparse import Missing
from workshop.report.cells import is_number, manifest_of
from workshop.report.columns import RESERVED, STEADY_STEP
from workshop.report.compare import Side, compare, mismatch, refused
from workshop.report.speed_cells import STEADY_TOKENS, speed_row
from workshop.report.spread import Spread
from workshop.report.engine import Table
from workshop.report.select import config_of, latest_runs, run_order, setup_label, setup_of
from workshop.lessons.precision_and_checkpointing_answers import checkpointing_answers
# the figures, shown by notebook 05 as lesson.precision_bars / lesson.checkpointing_bars
from workshop.lessons.precision_and_checkpointing_figures import (PRECISIONS, TOKENS, checkpointing_bars,  # noqa: F401
                                                                  precision_bars)

SEARCH = "max_batch"  # the config name prefix of workshop.max_batch's trial runs (max_batch-mb8)
LOSS = "final eval loss"
MEASURED = ((TOKENS, TOKENS), ("peak GPU MiB", RESERVED), (LOSS, LOSS))  # (column here, make it fast's column)


def stage_of(run):
    """'plain Trainer' or 'ZeRO N': the manifest's zero_stage (older runs: their DeepSpeed config's name)."""
    manifest = manifest_of(run)
    if isinstance(manifest.get("zero_stage"), int):
        return f"ZeRO {manifest['zero_stage']}"
    if manifest.get("deepspeed_config"):
        found = re.search(r"stage(\d)", str(manifest["deepspeed_config"]))
        return f"ZeRO {found.group(1)}" if found else "DeepSpeed"
    return "plain Trainer"


def _stage_order(stage):
    return -1 if stage == "plain Trainer" else int(stage[-1]) if stage[-1].isdigit() else 9


def precision_of(run):
    return str(manifest_of(run).get("precision") or "unknown")


def checkpointing_of(run):
    """What the model did (the manifest's gradient_checkpointing), else what the run asked for."""
    manifest = manifest_of(run)
    done = manifest.get("gradient_checkpointing")
    return done if isinstance(done, bool) else bool((manifest.get("settings") or {}).get("gradient_checkpointing"))


def variant(run):
    return f"{stage_of(run)}, {precision_of(run)}, checkpointing {'on' if checkpointing_of(run) else 'off'}"


def not_run(what, how):
    return Missing("not run yet", f"no {what} run yet: {how}")


def _training_runs(runs):
    return [run for run in runs if not config_of(run).startswith(SEARCH)]


def _stage_arg(stage):
    return "none" if stage == "plain Trainer" else f"stage{stage[-1]}"


# ---------------------------------------------------------------------------------------------- precision
PRECISION_FLAGS = ("fp16", "bf16", "precision")


def precision_table(runs):
    chosen, notes = latest_runs([run for run in _training_runs(runs) if not checkpointing_of(run)], key=variant)
    groups = {}  # (model and data, stage) -> {precision: run}
    for run in chosen:
        groups.setdefault((setup_of(run), stage_of(run)), {})[precision_of(run)] = run
    rows, pairs, on_cpu = [], [], []
    for (setup, stage), by_precision in sorted(groups.items(), key=lambda g: (g[0][0], _stage_order(g[0][1]))):
        row = {"model": setup_label(setup), "stage": stage, "run": ", ".join(r.name for r in by_precision.values())}
        for precision in PRECISIONS:
            run = by_precision.get(precision)
            speed = speed_row(run) if run else {}
            how = f"bash slurm/precision.slurm {_stage_arg(stage)} {precision}" + \
                (" on a CUDA GPU" if precision == "fp16" else "")
            for column, source in MEASURED:
                row[f"{precision} {column}"] = speed[source] if run else not_run(f"{precision} {stage}", how)
            if isinstance(speed.get(STEADY_TOKENS), Spread):
                row[f"{precision} {STEADY_TOKENS}"] = speed[STEADY_TOKENS]
        rows.append(row)
        pairs.append({p: mismatch(by_precision["fp32"], by_precision[p], PRECISION_FLAGS)
                      for p in ("fp16", "bf16") if "fp32" in by_precision and p in by_precision})
        on_cpu.append(not any(map(_on_gpu, by_precision.values())))
    return rows, precision_answers(rows, pairs, on_cpu), notes


ON_CPU = (" On a CPU: bf16 runs on the CPU's own arithmetic through autocast, so this says nothing of a GPU's "
          "tensor cores, where bf16 and fp16 pay off (the GPU reference in notebook 05 measures them).")


def _speedup(row, precision, differing, cpu=False):
    """'fp16 is faster than fp32: 2.34x ...', gated by the steady tokens/s intervals where both runs have them; on a
    CPU a difference is said to be the CPU's, not the lesson's (tensor cores)."""
    where = f"{row['model']}, {row['stage']}"
    if differing:
        return refused(where, ("fp32", precision), differing)
    fp32, value = row[f"fp32 {TOKENS}"], row[f"{precision} {TOKENS}"]
    steady = [row.get(f"{p} {STEADY_TOKENS}") for p in ("fp32", precision)]
    ratio = value / fp32
    if all(isinstance(figure, Spread) for figure in steady):
        clause = compare(Side("fp32", steady[0]), Side(precision, steady[1]), "steady real tokens/s")
        if clause.startswith("no measurable"):
            return f"{where}: {clause}."
        return f"{where}: {precision} is {'faster' if ratio > 1 else 'not faster'} than fp32: {clause}." + \
            (ON_CPU if cpu else "")
    return (f"{where}: {precision} is {'faster' if ratio > 1 else 'not faster'} than fp32: {ratio:.2f}x its "
            f"{TOKENS} ({value:,.0f} vs {fp32:,.0f}; whole-run figures without per-step times: no spread to judge "
            "the difference against).") + (ON_CPU if cpu else "")


def precision_answers(rows, pairs, on_cpu):
    """Is fp16/bf16 faster than fp32, and by how much, at each stage (gated by the steady intervals, refused for runs
    that differ in more than the precision); and does that agree with the benchmark the issue cites (fp16 about 3x
    fp32 at ZeRO 0-2, less at ZeRO 3)?"""
    answers, fp16 = [], {}  # (model, stage) -> fp16 / fp32 throughput
    for row, differing, cpu in zip(rows, pairs, on_cpu):
        fp32, compared = row[f"fp32 {TOKENS}"], False
        for precision in ("fp16", "bf16"):
            value = row[f"{precision} {TOKENS}"]
            if is_number(fp32) and is_number(value):
                compared = True
                answers.append(_speedup(row, precision, differing.get(precision), cpu))
                if precision == "fp16" and not differing.get(precision):
                    fp16[row["model"], row["stage"]] = value / fp32
        if not compared:
            answers.append(f"{row['model']}, {row['stage']}: no comparison yet: {TOKENS} of fp32 and of fp16 or bf16 "
                           "are both needed.")
    refused_pairs = {row["stage"] for row, differing in zip(rows, pairs) if differing.get("fp16")}
    for model in dict.fromkeys(row["model"] for row in rows):
        low = [fp16.get((model, f"ZeRO {n}")) for n in (0, 1, 2)]
        high = fp16.get((model, "ZeRO 3"))
        if refused_pairs & {f"ZeRO {n}" for n in range(4)}:
            answers.append(f"{model}: the benchmark's fp16 ≈ 3x fp32 at ZeRO 0-2, less at ZeRO 3: not answerable: the "
                           f"fp16 and fp32 runs of {', '.join(sorted(refused_pairs))} differ in more than the precision.")
            continue
        if None in low or high is None:
            answers.append(f"{model}: the benchmark's fp16 ≈ 3x fp32 at ZeRO 0-2, less at ZeRO 3: not answerable yet "
                           "(fp16 and fp32 runs at ZeRO 0, 1, 2 and 3 are needed; fp16 needs a CUDA GPU).")
            continue
        agrees = min(low) >= 2 and high < min(low)
        answers.append(f"{model}: the benchmark found fp16 ≈ 3x faster than fp32 at ZeRO 0-2 and less at ZeRO 3; "
                       f"here {', '.join(f'{r:.2f}x' for r in low)} at ZeRO 0-2 and {high:.2f}x at ZeRO 3: "
                       f"{'agrees' if agrees else 'does not agree'}.")
    return answers


# ---------------------------------------------------------------------------------------------- checkpointing
def searches(runs):
    """{(model, checkpointing): the latest max_batch.json} of the searches whose trial runs are among `runs`."""
    found = {}
    for run in sorted((run for run in runs if config_of(run).startswith(SEARCH)), key=run_order):
        try:
            record = json.loads((run.path.parent / "max_batch.json").read_text())
            found[record["model"], bool(record["gradient_checkpointing"])] = record
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a trial without its search's record (copied alone): nothing to report for it
    return found


def largest_batch(record, model, on_gpu, checkpointing):
    """The search's largest micro-batch that fit, or why there is none."""
    how = f"python -m workshop.max_batch --model {model}{' --gradient-checkpointing' if checkpointing else ''}"
    if record is None:
        return Missing("not searched", f"on a GPU: {how} (slurm/max_batch.slurm)") if on_gpu else \
            Missing("n/a (no GPU)", f"the micro-batch search stops at the first CUDA OOM, so it needs a GPU: {how}")
    if record.get("stopped") == "bound":
        return f"≥ {record['largest_fit']} (the bound)"
    if record.get("stopped") == "oom":
        return float(record["largest_fit"]) if record.get("largest_fit") else \
            Missing("none fits", f"micro-batch {record.get('first_oom')} already ran out of GPU memory")
    last = (record.get("trials") or [{}])[-1]
    return Missing("search failed", f"micro-batch {last.get('micro_batch')}: {last.get('outcome')}")


def _on_gpu(run):
    return str((manifest_of(run).get("peak_memory") or {}).get("device", "")).startswith("cuda")


WITHIN_NOISE = Missing("n/a (no measurable difference)", "the 95% intervals of the steady s/step with and without "
                       "checkpointing overlap: no difference at this size, so no percentage (the answer says so too)")


MIB = 2 ** 20


def activations_mib(run):
    """The activations one micro-batch keeps for the backward pass, MiB (workshop/activations.py: exact, any
    device), or why the run has none."""
    value = manifest_of(run).get("activation_peak_bytes")
    return value / MIB if type(value) in (int, float) and value > 0 else Missing(
        "n/a (not recorded)", "activation_peak_bytes: recorded by runs since 2026-12-05, not under --torch-compile")


def _saved(without, with_):
    """without - with_ (MiB), or the marker of the side that has no number."""
    return without - with_ if is_number(without) and is_number(with_) else \
        next(v for v in (without, with_) if not is_number(v))


def time_lost(without, with_):
    """The time lost per step, % (with - without) / without: gated as the answer is, so where both steady figures'
    intervals overlap the cell says so instead of a percentage of noise; a missing side's marker where one is."""
    if all(isinstance(v, Spread) for v in (without, with_)) and not without.separated_from(with_):
        return WITHIN_NOISE
    values = [v.value if isinstance(v, Spread) else v for v in (without, with_)]
    if not all(map(is_number, values)):
        return next(v for v in (without, with_) if not is_number(v))
    return (values[1] - values[0]) / values[0] * 100


def checkpointing_table(runs):
    found = searches(runs)
    chosen, notes = latest_runs(_training_runs(runs), key=variant)
    groups = {}  # (model and data, stage, precision) -> {checkpointing: run}
    for run in chosen:
        groups.setdefault((setup_of(run), stage_of(run), precision_of(run)), {})[checkpointing_of(run)] = run
    rows, differing, activations = [], [], []  # activations: (without, with) MiB per row, for the answers
    for (setup, stage, precision), pair in sorted(groups.items(), key=lambda g: (g[0][0], _stage_order(g[0][1]))):
        if True not in pair:
            continue  # no checkpointing run to compare: the precision table shows it
        row = {"model": setup_label(setup), "stage": stage, "precision": precision,
               "run": ", ".join(run.name for run in pair.values())}
        how = f"bash slurm/checkpointing.slurm off {_stage_arg(stage)} {precision}"
        off, on = (speed_row(pair[c]) if c in pair else None for c in (False, True))
        differing.append(mismatch(pair[False], pair[True], ("gradient_checkpointing",)) if off else [])
        # the steady median with its interval where both runs timed every step, else speed.py's whole-run figure
        seconds = STEADY_STEP if off and all(isinstance(r.get(STEADY_STEP), Spread) for r in (off, on)) else "s/step"
        for column, source in (("peak GPU MiB", RESERVED), ("s/step", seconds)):
            without, with_ = off[source] if off else not_run("checkpointing off", how), on[source]
            row[f"{column} without"], row[f"{column} with"] = without, with_
            if column == "peak GPU MiB":
                row["memory saved MiB"] = _saved(without, with_)
            else:
                row["time lost %"] = time_lost(without, with_)
        activations.append([activations_mib(pair[False]) if off else not_run("checkpointing off", how),
                            activations_mib(pair[True])])
        row["activations saved MiB"] = _saved(*activations[-1])
        model = setup[0]
        for checkpointing in (False, True):
            row[f"largest micro-batch {'with' if checkpointing else 'without'}"] = largest_batch(
                found.get((model, checkpointing)), model, any(map(_on_gpu, pair.values())), checkpointing)
        rows.append(row)
    return rows, checkpointing_answers(rows, differing, activations), notes


TABLES = (Table("precision", "Precision: fp32 vs fp16 vs bf16 per ZeRO stage", precision_table, each_run=False),
          Table("gradient_checkpointing", "Gradient checkpointing: memory saved vs time lost, largest micro-batch",
                checkpointing_table, each_run=False))
