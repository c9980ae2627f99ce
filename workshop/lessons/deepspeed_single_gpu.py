"""Lesson 2, DeepSpeed ZeRO on one GPU (deepspeed_single_gpu/): Part 1 (pin_memory true vs false) and Part 2
(every configuration), their quiz answers; the figures are in deepspeed_single_gpu_figures.py.

These tables compare runs: one row per (model and data, config) from its latest completed run. The handout's
layout names the model and data as it does ("Bloom 560M, 500 subset") and the config as a stage.
"""

import functools

import pandas as pd

from workshop.errors import WorkshopError
from workshop.lessons import ZERO_CONFIGS as CONFIGS
from workshop.logparse import Missing
from workshop.report.cells import (change, cpu_peak, gpu_stat, is_number, manifest_of, manifest_value, torch_reserved,
                                   train_runtime)
from workshop.report.columns import (ESTIMATE_GPU, ESTIMATE_HOST, HOST_PEAK, PEAK_GPU, RESERVED, RUNTIME,
                                     memory_limit_note)
from workshop.report.engine import Table
from workshop.report.select import by_setup, config_of, latest_runs, setup_label, setup_of
from workshop.report.shapes import cell, keep_by_run, model_and_data

def zero_row(run):
    """What both lesson-2 tables measure for one run."""
    model, init, subset = setup_of(run)
    return {"model": model, "init": init, "subset": subset, "config": config_of(run), "run": run.name,
            "status": run.status,
            PEAK_GPU: gpu_stat(run, "max"),
            RESERVED: torch_reserved(run),
            HOST_PEAK: cpu_peak(run),
            RUNTIME: train_runtime(run),
            "wall s (manifest)": manifest_value(run, "wall_seconds", what="wall_seconds")}



def _lesson_runs(runs):
    """Lesson-2 runs proper: a DeepSpeed config by name or in the manifest (not a baseline filed here by hand)."""
    return [run for run in runs if config_of(run) in CONFIGS or manifest_of(run).get("deepspeed_config")]


PIN, NOPIN = "stage2_offload", "stage2_offload_nopin"


def part1(runs):
    chosen, notes = latest_runs([run for run in runs if config_of(run) in (PIN, NOPIN)], CONFIGS)
    rows = [zero_row(run) for run in chosen]
    notes += [note for run in chosen for note in run.notes]
    answers = []
    runtime = RUNTIME
    for setup in dict.fromkeys(setup_of(run) for run in chosen):
        by_config = {row["config"]: row for row in rows if (row["model"], row["init"], row["subset"]) == setup}
        pin, nopin = by_config.get(PIN, {}).get(runtime), by_config.get(NOPIN, {}).get(runtime)
        if is_number(pin) and is_number(nopin):
            answers.append(f"{setup_label(setup)}: without pinned memory ({NOPIN}) training took "
                           f"{change(nopin, pin)} than with pinned ({PIN}): {nopin:.1f} s vs {pin:.1f} s.")
        else:
            lacking = [c for c, value in ((PIN, pin), (NOPIN, nopin)) if not is_number(value)]
            answers.append(f"{setup_label(setup)}: no runtime comparison yet: no train_runtime for "
                           f"{' and '.join(lacking)} (run `bash slurm/<config>.slurm` to completion).")
    return rows, answers, notes


@functools.lru_cache(maxsize=None)
def _estimates(model):
    from workshop.estimate import cached_estimate_table  # DeepSpeed's estimators, kept on disk after the first use

    return cached_estimate_table(model, [1])


def model_state_estimate(run):
    """DeepSpeed's estimate of model-state memory on the one GPU (MiB) for this run's model and config."""
    model = str(manifest_of(run).get("model", "")).removeprefix("bigscience/")  # -> bloom-560m
    config = config_of(run)
    try:
        estimates = _estimates(model)
    except (ValueError, WorkshopError):  # no config to count from: a Hub id not cached here, a folder gone
        return Missing(f"n/a (no estimate for {model or 'unknown model'})",
                       "workshop.estimate needs the model's config: a listed shape, the HF cache or the folder")
    # workshop.train loads the model before the Trainer sets up DeepSpeed, so ZeRO-3 starts from a whole model
    # (the estimate without zero.Init); stages 0-2 have no such choice ("").
    found = estimates[estimates["configs"].str.split(", ").map(lambda names: config in names)
                      & (estimates["zero_init"] != "yes")]
    if found.empty:
        return Missing(f"n/a (no estimate for {config})", "workshop.estimate covers the lesson's configs only")
    return float(found["gpu_gib_per_gpu"].iloc[0] * 1024)


def part2(runs):
    chosen, notes = latest_runs(_lesson_runs(runs), CONFIGS)
    notes += [note for run in chosen for note in run.notes]
    rows = []
    for run in chosen:
        row = zero_row(run)
        estimate = row["DeepSpeed estimate MiB (model states)"] = model_state_estimate(run)
        reserved = row[RESERVED]
        row["remainder MiB (reserved - estimate)"] = reserved - estimate if is_number(reserved) and \
            is_number(estimate) else (reserved if isinstance(reserved, Missing) else estimate)
        if "preflight" in manifest_of(run):  # only runs that recorded one get the comparison
            row.update({column.name: column.value(run) for column in (ESTIMATE_GPU, ESTIMATE_HOST)})
        notes += [note for note in [memory_limit_note(run)] if note]
        rows.append(row)
    return rows, lowest_peak_answers(rows) + offload_answers(rows), notes




def lowest_peak_answers(rows, gpu_column=PEAK_GPU):
    """Per model and data, the configuration with the lowest GPU peak; host RSS when no GPU was measured."""
    answers = []
    for setup, group in by_setup(rows).items():
        column, what = gpu_column, "GPU memory (nvidia-smi)"
        if not any(is_number(row[column]) for row in group):
            column, what = HOST_PEAK, "host RSS (psrecord), as no GPU was measured"
        # Only completed runs answer: an OOM or a refused start has a peak too, but not the configuration's.
        measured = sorted((row[column], row["config"]) for row in group
                          if is_number(row[column]) and row["status"] == "completed")
        if not measured:
            answers.append(f"{setup_label(setup)}: no peak memory measured yet.")
            continue
        (low, low_config), (high, high_config) = measured[0], measured[-1]
        answers.append(f"{setup_label(setup)}: lowest peak {what}: {low_config} at {low:.0f} MiB"
                       + (f" (highest: {high_config} at {high:.0f} MiB)." if len(measured) > 1 else
                          "; the only configuration measured so far."))
    return answers


def offload_answers(rows):
    """Per model and data and stage, how much longer each offload config took than the same stage without."""
    answers, runtime = [], RUNTIME
    for setup, group in by_setup(rows).items():
        # a run that stopped early (diverged, oom) ran fewer steps: its runtime compares with nothing
        by_config = {row["config"]: row[runtime] for row in group if row["status"] == "completed"}
        for config, seconds in by_config.items():
            base = config.split("_offload")[0].split("_zenflow")[0]  # stage2_zenflow offloads too
            if base == config or not is_number(seconds):
                continue
            if is_number(by_config.get(base)):
                answers.append(f"{setup_label(setup)}: {config} took {change(seconds, by_config[base])} "
                               f"than {base}: {seconds:.1f} s vs {by_config[base]:.1f} s.")
            else:
                answers.append(f"{setup_label(setup)}: {config} has no {base} run with a runtime to compare with.")
    return answers


# ---------------------------------------------------------------------------------------------- the handout's layout
SHOWN = {PEAK_GPU, HOST_PEAK, RUNTIME}  # the by-run columns both handout tables show
PIN_LABELS = {PIN: "`pin_memory: true`", NOPIN: "`pin_memory: false`"}


def config_label(config):
    """stage2_offload_nopin -> 'Stage 2 + offload (no pin)', as lesson 3's handout table names its columns."""
    stage, _, rest = config.partition("_")
    label = f"Stage {stage.removeprefix('stage')}" if stage.startswith("stage") else config
    offload = (" + NVMe offload" if "nvme" in rest else " + offload" if "offload" in rest
               else " + offload with ZenFlow" if "zenflow" in rest else "")
    return label + offload + (" (no pin)" if "nopin" in rest else "")


def runtime_cell(value, run):
    """`412.3 s`, or `412.3 s (20 of 1,875 steps; all ≈ 38,650 s extrapolated)` when the run stopped short of the
    lesson's steps (--max-steps): such a runtime is not the lesson's, so the quiz does not compare it. The
    extrapolation is the runtime per step times the lesson's steps, start-up included: labelled, never a cell's
    number."""
    if not is_number(value):
        return value
    manifest = manifest_of(run) if run else {}
    done, planned = manifest.get("steps_done"), manifest.get("steps_planned")
    max_steps = (manifest.get("settings") or {}).get("max_steps", -1)
    if isinstance(done, int) and isinstance(planned, int) and done < planned:
        whole = f"; all ≈ {value / done * planned:,.0f} s extrapolated" if done > 0 else ""
        return f"{value:.1f} s ({done:,} of {planned:,} steps{whole})"
    if isinstance(max_steps, int) and max_steps > 0:
        return f"{value:.1f} s (--max-steps {max_steps:,})"
    return value


def _handout_rows(df, runs, columns):
    by_name = {run.name: run for run in runs}
    return [[model_and_data(row["model"], row["init"], row["subset"]), *(make(row, by_name.get(row["run"]))
                                                                          for make in columns)]
            for _, row in df.iterrows()]


def part1_handout(df, runs):
    columns = [lambda row, run: PIN_LABELS.get(row["config"], row["config"]),
               lambda row, run: cell(row, PEAK_GPU),
               lambda row, run: cell(row, HOST_PEAK),
               lambda row, run: runtime_cell(row[RUNTIME], run)]
    shaped = keep_by_run(pd.DataFrame(_handout_rows(df, runs, columns), columns=PART1_HEADER), df)
    shaped.attrs["columns"] = SHOWN
    answers = []
    for setup, group in shaped.groupby("Model and Data", sort=False):
        times = dict(zip(group["Pinned Memory"], group["Total Runtime"]))
        pin, nopin = times.get(PIN_LABELS[PIN]), times.get(PIN_LABELS[NOPIN])
        if is_number(pin) and is_number(nopin):
            verdict = "yes" if pin < nopin else "no"
            answers.append(f"{setup}: did `pin_memory: true` reduce the runtime of Stage 2 + offload? {verdict}: "
                           f"{pin:.1f} s pinned vs {nopin:.1f} s not, pinned took {change(pin, nopin)}.")
        else:
            answers.append(f"{setup}: did `pin_memory: true` reduce the runtime? not answerable yet: a full "
                           f"runtime of both {PIN} and {NOPIN} is needed (bash slurm/{PIN}.slurm and "
                           f"slurm/{NOPIN}.slurm).")
    return [("deepspeed_single_gpu_part1", "Part 1: Stage 2 + offload with and without `pin_memory: true`", shaped,
             answers, [])]


def part2_handout(df, runs):
    columns = [lambda row, run: config_label(row["config"]), lambda row, run: cell(row, PEAK_GPU),
               lambda row, run: cell(row, HOST_PEAK), lambda row, run: runtime_cell(row[RUNTIME], run)]
    shaped = keep_by_run(pd.DataFrame(_handout_rows(df, runs, columns), columns=PART2_HEADER), df)
    shaped.attrs["columns"] = SHOWN
    answers = []
    status = dict(zip(shaped.index, df["status"]))
    for setup, group in shaped.groupby("Model and Data", sort=False):
        column, what = PART2_HEADER[2], "peak GPU memory"
        if not group[column].map(is_number).any():
            column, what = PART2_HEADER[3], "peak CPU memory (no GPU was measured)"
        # Only completed runs answer: an OOM or a refused start has a peak too, but not the configuration's.
        measured = sorted((v, c) for i, v, c in zip(group.index, group[column], group["DeepSpeed Config"])
                          if is_number(v) and status[i] == "completed")
        unfinished = [f"{c} ({status[i]})" for i, c in zip(group.index, group["DeepSpeed Config"])
                      if status[i] != "completed"]
        answers.append((f"1. {setup}: lowest {what}: {measured[0][1]} at {measured[0][0]:.0f} MiB"
                        + (f" (highest: {measured[-1][1]} at {measured[-1][0]:.0f} MiB)" if len(measured) > 1 else "")
                        if measured else f"1. {setup}: no completed run with its peak memory yet")
                       + (f"; did not complete: {', '.join(unfinished)}." if unfinished else "."))
        times = dict(zip(group["DeepSpeed Config"], group["Total RunTime"]))
        for config, seconds_ in times.items():
            base = config.split(" + offload")[0]
            if base != config and is_number(seconds_) and is_number(times.get(base)):
                answers.append(f"2. {setup}: {config} took {change(seconds_, times[base])} than {base}: "
                               f"{seconds_:.1f} s vs {times[base]:.1f} s.")
    return [("deepspeed_single_gpu_part2", "Part 2: the ZeRO stage comparison", shaped, answers, [])]


PART1_HEADER = ["Model and Data", "Pinned Memory", "Peak GPU Memory (MiB)", "Peak CPU Memory (MiB)", "Total Runtime"]
PART2_HEADER = ["Model and Data", "DeepSpeed Config", "Peak GPU Memory Used (MiB)", "Peak CPU Memory Used (MiB)",
                "Total RunTime"]
TABLES = (Table("deepspeed_single_gpu_part1", "Part 1: ZeRO 2 + offload, pin_memory true vs false", part1,
                each_run=False, handout=part1_handout),
          Table("deepspeed_single_gpu_part2", "Part 2: every configuration", part2, each_run=False,
                handout=part2_handout))
