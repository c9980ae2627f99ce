"""Lesson 2, DeepSpeed ZeRO on one GPU (deepspeed_single_gpu/): Part 1 (pin_memory true vs false) and Part 2
(every configuration), their quiz answers; the figures are in deepspeed_single_gpu_figures.py.

These tables compare runs: one row per (model and data, config) from its latest completed run. The handout's
layout names the model and data as it does ("Bloom 560M, 500 subset") and the config as a stage.
"""

import functools

from workshop.errors import WorkshopError
from workshop.lessons import ZERO_CONFIGS as CONFIGS
from workshop.logparse import Missing
from workshop.report.cells import change, is_number, manifest_of, torch_reserved, trained_on_cpu
from workshop.report.columns import (ESTIMATE_GPU, ESTIMATE_HOST, HOST_PEAK_COL, MODEL_STATES_COL, PEAK_GPU_COL,
                                     RUNTIME, STEADY_STEP, STEADY_STEP_COL, ZERO_COLUMNS, Column, memory_limit_note,
                                     rows_of)
from workshop.report.compare import mismatch, refused
from workshop.report.engine import Table
from workshop.report.select import config_of, latest_runs
from workshop.report.shapes import keep_by_run, model_and_data
from workshop.report.zero import (CONFIG_LABEL_COL, MODEL_AND_DATA_COL, RUNTIME_CELL_COL, config_label, layout_frame,
                                  lowest_peak_answers, runs_in_table_order, runtime_cell, short_clause,
                                  steady_clause, time_answer)


def _lesson_runs(runs):
    """Lesson-2 runs proper: a DeepSpeed config by name or in the manifest (not a baseline filed here by hand)."""
    return [run for run in runs if config_of(run) in CONFIGS or manifest_of(run).get("deepspeed_config")]


PIN, NOPIN = "stage2_offload", "stage2_offload_nopin"


def part1(runs):
    """The by-run rows; the quiz answers are the handout layout's (part1_handout), computed there once."""
    chosen, notes = latest_runs([run for run in runs if config_of(run) in (PIN, NOPIN)], CONFIGS)
    return rows_of(chosen, ZERO_COLUMNS), [], notes + [note for run in chosen for note in run.notes]


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


def _remainder(run):
    """torch's reserved peak minus DeepSpeed's estimate: activations, buffers, fragmentation (or why not)."""
    reserved, estimate = torch_reserved(run), model_state_estimate(run)
    if is_number(reserved) and is_number(estimate):
        return reserved - estimate
    return reserved if isinstance(reserved, Missing) else estimate


ESTIMATE_COL = Column("DeepSpeed estimate MiB (model states)", "MiB", "DeepSpeed's estimate of the model states on "
                      "the one GPU for the run's model and config", model_state_estimate)
REMAINDER_COL = Column("remainder MiB (reserved - estimate)", "MiB", "what the GPU held beside the model states",
                       _remainder)
PART2_COLUMNS = (*ZERO_COLUMNS, ESTIMATE_COL, REMAINDER_COL)


def part2(runs):
    """The by-run rows, with DeepSpeed's estimate beside the measured peaks; answers: part2_handout's."""
    chosen, notes = latest_runs(_lesson_runs(runs), CONFIGS)
    notes += [note for run in chosen for note in run.notes]
    rows = rows_of(chosen, PART2_COLUMNS)
    for run, row in zip(chosen, rows):
        if "preflight" in manifest_of(run):  # only runs that recorded one get the comparison
            row.update({column.name: column.value(run) for column in (ESTIMATE_GPU, ESTIMATE_HOST)})
        notes += [note for note in [memory_limit_note(run)] if note]
    return rows, [], notes


# ---------------------------------------------------------------------------------------------- the handout's layout
PIN_LABELS = {PIN: "`pin_memory: true`", NOPIN: "`pin_memory: false`"}
PIN_COL = Column("config", "", "pin_memory on or off", lambda run: PIN_LABELS.get(config_of(run), config_of(run)))
# Beside the handout's columns, where some run records them: the steady time per step with its interval, and the
# engine's model-state bytes per process (ZeRO's sharding and offload, exact, on a CPU too).
EXTRA = [("Steady s/step (median, 95% interval)", STEADY_STEP_COL),
         ("Model States per Process (MiB, engine)", MODEL_STATES_COL)]
PART1_LAYOUT = [("Model and Data", MODEL_AND_DATA_COL), ("Pinned Memory", PIN_COL),
                ("Peak GPU Memory (MiB)", PEAK_GPU_COL), ("Peak CPU Memory (MiB)", HOST_PEAK_COL),
                ("Total Runtime", RUNTIME_CELL_COL)]
PART2_LAYOUT = [("Model and Data", MODEL_AND_DATA_COL), ("DeepSpeed Config", CONFIG_LABEL_COL),
                ("Peak GPU Memory Used (MiB)", PEAK_GPU_COL), ("Peak CPU Memory Used (MiB)", HOST_PEAK_COL),
                ("Total RunTime", RUNTIME_CELL_COL)]


def _answer_rows(df, runs):
    """The handout table's rows as the answers read them, with their runs: the by-run cells under the handout's
    names for model and data and configuration, the runtime as the handout shows it (a truncated run's is text:
    not the lesson's runtime, so no answer compares it)."""
    chosen = runs_in_table_order(df, runs)
    rows = [dict(row, config=config_label(row["config"]), label=model_and_data(row["model"], row["init"],
                                                                              row["subset"]),
                 **{RUNTIME: runtime_cell(row[RUNTIME], run)})
            for row, run in zip(df.to_dict("records"), chosen)]
    return rows, chosen


PIN_ON_CPU = ("not on a CPU: `pin_memory` page-locks the host buffers that offloaded states cross to and from the "
              "GPU, and a run without a GPU makes no such copy, so any difference here is other work on this machine "
              "(the GPU reference in notebook 02 answers it)")


def pin_answer(setup, by_config):
    """Did `pin_memory: true` reduce Stage 2 + offload's runtime? Gated by the steady s/step intervals, and on a CPU
    never answered: pinning speeds copies to a GPU, so the measurement is shown as what it is, not as a verdict."""
    (pin, pin_run), (nopin, nopin_run) = by_config.get(PIN, ({}, None)), by_config.get(NOPIN, ({}, None))
    if not (is_number(pin.get(RUNTIME)) and is_number(nopin.get(RUNTIME))):
        return (f"{setup}: did `pin_memory: true` reduce the runtime? not answerable yet: a full runtime of both "
                f"{PIN} and {NOPIN} is needed (bash slurm/{PIN}.slurm and slurm/{NOPIN}.slurm).")
    differing = mismatch(pin_run, nopin_run, ("deepspeed",))
    if differing:
        return refused(setup, (PIN, NOPIN), differing)
    question = f"{setup}: did `pin_memory: true` reduce the runtime of Stage 2 + offload?"
    verdict, evidence = _pin_evidence(pin, pin_run, nopin, nopin_run)
    if trained_on_cpu(pin_run) and trained_on_cpu(nopin_run):
        return f"{question} {PIN_ON_CPU}; measured: {evidence}."
    return f"{question} {verdict + ': ' if verdict else ''}{evidence}."


def _pin_evidence(pin, pin_run, nopin, nopin_run):
    """(verdict 'yes'/'no' or None, the measurement behind it) for the pinned and not-pinned runs."""
    seconds, base = pin[RUNTIME], nopin[RUNTIME]
    whole = f"whole runs {seconds:.1f} s pinned vs {base:.1f} s not"
    short = short_clause((("not pinned", nopin_run), ("pinned", pin_run)))
    if short:  # a whole run of a few steps is mostly warm-up: no verdict from it
        return None, f"no measurable difference can be stated: {short}; {whole}"
    measurable, clause = steady_clause(("not pinned", nopin), ("pinned", pin))
    if measurable is False:
        return None, f"{clause}; {whole}"
    if measurable:  # the steady state answers; the whole runs (start-up included) are shown beside it
        return "yes" if pin[STEADY_STEP].value < nopin[STEADY_STEP].value else "no", f"{clause}; {whole}"
    return ("yes" if seconds < base else "no",
            f"{seconds:.1f} s pinned vs {base:.1f} s not, pinned took {change(seconds, base)} ({clause})")


def part1_handout(df, runs):
    shaped, _ = layout_frame(runs_in_table_order(df, runs), PART1_LAYOUT, EXTRA)
    shaped = keep_by_run(shaped, df)
    rows, chosen = _answer_rows(df, runs)
    answers = []
    for setup in dict.fromkeys(row["label"] for row in rows):
        by_config = {config_of(run): (row, run) for row, run in zip(rows, chosen) if row["label"] == setup}
        answers.append(pin_answer(setup, by_config))
    return [("deepspeed_single_gpu_part1", "Part 1: Stage 2 + offload with and without `pin_memory: true`", shaped,
             answers, [])]


def part2_handout(df, runs):
    shaped, _ = layout_frame(runs_in_table_order(df, runs), PART2_LAYOUT, EXTRA)
    shaped = keep_by_run(shaped, df)
    rows, chosen = _answer_rows(df, runs)
    answers = lowest_peak_answers(rows, label=lambda setup: model_and_data(*setup), prefix="1. ",
                                  runs={run.name: run for run in chosen})
    for setup in dict.fromkeys(row["label"] for row in rows):
        group = {row["config"]: (row, run) for row, run in zip(rows, chosen) if row["label"] == setup}
        for config, (row, run) in group.items():
            if config_of(run).endswith("_nopin"):  # it differs from its stage in pinning too: Part 1 compares that
                continue
            base = config.split(" + offload")[0]
            # a run that stopped early (diverged, oom) ran fewer steps: its runtime compares with nothing
            if base != config and base in group and {row["status"], group[base][0]["status"]} == {"completed"}:
                answer = time_answer(f"2. {setup}", (base, group[base][0]), (config, row), group[base][1], run)
                answers += [answer] if answer else []
    return [("deepspeed_single_gpu_part2", "Part 2: the ZeRO stage comparison", shaped, answers, [])]


TABLES = (Table("deepspeed_single_gpu_part1", "Part 1: ZeRO 2 + offload, pin_memory true vs false", part1,
                each_run=False, handout=part1_handout),
          Table("deepspeed_single_gpu_part2", "Part 2: every configuration", part2, each_run=False,
                handout=part2_handout))
