"""The ZeRO lessons' memory quiz: which configuration holds the least (and the most) memory, per model and data.

Like the time answers, it compares like with like: only runs that differ in the ZeRO setting alone are ranked, so
a bf16 run among fp32 ones (ZenFlow's) cannot come out lowest by its precision; the runs left out are named with the
settings they differ in. Configurations with the same figure are named as a tie, never one of them as the lowest.
"""

import re

from workshop.report.cells import is_number, manifest_of
from workshop.report.columns import HOST_PEAK, MODEL_STATES, PEAK_GPU
from workshop.report.compare import LOWER_OR_SAME, Side, compare, mismatch
from workshop.report.select import by_setup, setup_label, world_of

COMPARED = ("deepspeed",)  # the setting the ZeRO configurations differ in: their DeepSpeed config


def memory_basis(rows, gpu_column):
    """(column, what it measures) the lowest-memory answer ranks by: the GPU's peak where measured; on a CPU the
    engine's model states per process (exact: ZeRO's sharding and offload show in it), else host RSS."""
    if any(is_number(row.get(gpu_column)) for row in rows):
        return gpu_column, "peak GPU memory"
    if any(is_number(row.get(MODEL_STATES)) for row in rows):
        return MODEL_STATES, "model states per process (engine; no GPU was measured)"
    return HOST_PEAK, "peak CPU memory (no GPU was measured)"


def _differing(run_a, run_b):
    return mismatch(run_a, run_b, COMPARED) if run_a is not None and run_b is not None else []


def like_for_like(rows, runs):
    """(kept, left out): the largest set of rows whose runs differ in the ZeRO setting alone (the first such set in
    table order when two are as large), and each other row with the settings its run differs in from that set.
    Without runs to read settings from (handout logs), every row is kept."""
    run_of = [(runs or {}).get(row.get("run")) for row in rows]
    sets = [[j for j in range(len(rows)) if not _differing(run_of[i], run_of[j])] for i in range(len(rows))]
    best = max(sets, key=len, default=[])
    reference = run_of[best[0]] if best else None
    left_out = [(row, _differing(reference, run)) for j, (row, run) in enumerate(zip(rows, run_of)) if j not in best]
    return [rows[j] for j in best], left_out


def _mib(value):
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.3g}"  # bloom-tiny's model states are under 1 MiB


def _named(measured, value):
    """'Stage 0 at 3.53 MiB', or where several hold the same figure 'Stage 1 at 4.41 MiB, tied with 7 other configs:
    Stage 1 + offload, ...' (table order): a tie is named as one, never a config picked out of it."""
    tied = [config for figure, config in measured if figure == value]
    others = len(tied) - 1
    return f"{tied[0]} at {_mib(value)} MiB" + (
        f", tied with {others} other config{'s' if others > 1 else ''}: {', '.join(tied[1:])}" if others else "")


def _left_out(left_out):
    """'; left out, as it differs in more than the ZeRO setting: A (bf16, precision): rerun ...', or ''."""
    if not left_out:
        return ""
    one = len(left_out) == 1
    named = ", ".join(f"{row['config']} ({', '.join(flags)})" for row, flags in left_out)
    return (f"; left out, as {'it differs' if one else 'they differ'} in more than the ZeRO setting: {named}: rerun "
            f"{'it' if one else 'them'} with the same flags to compare")


def _ranking(what, measured):
    """'lowest ...: A at x MiB (highest: B at y MiB)' from [(figure, config)] in table order."""
    figures = [figure for figure, _ in measured]
    low, high = min(figures), max(figures)
    if low == high:
        return f"lowest {what}: {_named(measured, low)}" + ("; every config holds the same" if len(measured) > 1
                                                             else "")
    return f"lowest {what}: {_named(measured, low)} (highest: {_named(measured, high)})"


def _stage(config):
    found = re.match(r"Stage (\d)", str(config))
    return int(found.group(1)) if found else None


def master_copy_note(measured, runs):
    """On one process in fp32, Stages 1-3 holding more model states than Stage 0 is ZeRO's fp32 master copy (the
    mechanism, tests/test_model_states.py): said when that is what the engine's counts show, else None."""
    stage0 = [figure for figure, config in measured if _stage(config) == 0]
    zero = [figure for figure, config in measured if _stage(config) in (1, 2, 3)]
    if not stage0 or not zero or min(zero) <= max(stage0) or not runs:
        return None
    if not all(world_of(run) == 1 and manifest_of(run).get("precision") == "fp32" for run in runs):
        return None
    shown = _mib(min(zero)) if min(zero) == max(zero) else f"{_mib(min(zero))}–{_mib(max(zero))}"
    return (f"on one process every Stage 1-3 run holds more than Stage 0 ({shown} vs {_mib(max(stage0))} MiB): under "
            "ZeRO 1-3 DeepSpeed keeps an fp32 master copy of the weights, which Stage 0 in fp32 does without, and one "
            "process has nobody to partition it with; ZeRO's saving shows on several processes (lesson 3)")


def lowest_peak_answers(rows, gpu_column=PEAK_GPU, label=setup_label, prefix="", runs=None):
    """Per model and data, the configuration with the lowest memory (memory_basis says by which measure) among the
    runs that differ in the ZeRO setting alone (`runs`: {run name: Run}, to read their settings); only completed runs
    answer: an OOM or a refused start has a peak too, but not the configuration's."""
    answers = []
    for setup, group in by_setup(rows).items():
        column, what = memory_basis(group, gpu_column)
        completed = [row for row in group if is_number(row[column]) and row["status"] == "completed"]
        kept, left_out = like_for_like(completed, runs)
        measured = [(row[column], row["config"]) for row in kept]
        unfinished = [f"{row['config']} ({row['status']})" for row in group if row["status"] != "completed"]
        tail = _left_out(left_out) + (f"; did not complete: {', '.join(unfinished)}" if unfinished else "") + "."
        if not measured:
            answers.append(f"{prefix}{label(setup)}: no completed run with its peak memory yet{tail}")
            continue
        answer = _ranking(what, measured)
        note = master_copy_note(measured, [runs[row["run"]] for row in kept if row.get("run") in (runs or {})]) \
            if column == MODEL_STATES else None
        answers.append(f"{prefix}{label(setup)}: {answer}{tail}" + (f" {note[0].upper()}{note[1:]}." if note else ""))
        answers += [f"{prefix}{label(setup)}: {clause}." for clause in [sharding_check(kept)] if clause]
    return answers


SHARDS = ("ZeRO 3 partitions what ZeRO 1 and 2 hold (parameters, gradients, optimizer states with their fp32 "
          "master copy) across the processes, never adding to it")


def sharding_check(rows):
    """'unexpected: ...' when a ZeRO 3 run holds more model-state bytes per process than the ZeRO 1 (or 2) run of
    the same model and data; None when the engine's counts agree with the mechanism. Not against ZeRO 0: ZeRO 1-3
    keep an fp32 master copy even of fp32 weights and ZeRO 0 does not, so on one process ZeRO 3 holds 20 bytes a
    parameter to ZeRO 0's 16 (measured on real engines, tests/test_model_states.py)."""
    states = {str(row["config"]): row.get(MODEL_STATES) for row in rows if is_number(row.get(MODEL_STATES))}
    plain = {name: v for name, v in states.items() if "offload" not in name.lower() and "zenflow" not in name.lower()}
    stage3 = [(name, v) for name, v in plain.items() if name.lower().replace(" ", "").startswith("stage3")]
    lower = sorted((name, v) for name, v in plain.items() if name.lower().replace(" ", "")[:6] in ("stage1", "stage2"))
    if not stage3 or not lower:
        return None
    clause = compare(Side(lower[0][0], lower[0][1], exact=True), Side(stage3[0][0], stage3[0][1], exact=True),
                     "model states per process", expect=LOWER_OR_SAME, why=SHARDS,
                     rerun="rerun both with the same flags; if it stays, the engine's record is wrong")
    return clause if clause and clause.startswith("unexpected") else None
