"""What the ZeRO lessons (2: one GPU, 3: several) share: their per-run columns, configuration labels, the handout's
cells from a (label, Column) layout, and the answers that compare configurations in time (lowest memory: lowest.py).
"""

import pandas as pd

from workshop.logparse import Missing
from workshop.report.cells import change, is_number, manifest_of, trained_on_cpu
from workshop.report.columns import (HOST_PEAK, MODEL_STATES, PEAK_PER_GPU, RUNTIME, STATES_WHERE, STEADY_STEP,
                                     TRAIN_RATE, ZERO_COLUMNS, Column, row_of, train_runtime)
from workshop.report.compare import LOWER_OR_SAME, Side, compare, mismatch, refused
from workshop.report.lowest import lowest_peak_answers, memory_basis, sharding_check  # noqa: F401  (the lessons')
from workshop.report.select import config_of, setup_of
from workshop.report.shapes import model_and_data
from workshop.report.spread import MIN_STEADY, too_few_steps


def zero_row(run):
    """What both lesson-2 tables measure for one run."""
    return row_of(run, ZERO_COLUMNS)


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


# The handout's cells, each a Column of the run (model and data, the config's label, the runtime as the handout
# shows it), beside the by-run Columns they show as they are.
MODEL_AND_DATA_COL = Column("model and data", "", "the model and data as the handout names them",
                            lambda run: model_and_data(*setup_of(run)))
CONFIG_LABEL_COL = Column("config", "", "the configuration as the handout names it",
                          lambda run: config_label(config_of(run)))
RUNTIME_CELL_COL = Column(RUNTIME, "s", "train_runtime, with the steps it took when the run stopped short",
                          lambda run: runtime_cell(train_runtime(run), run))


def layout_frame(runs, layout, optional=()):
    """The handout's table: one row per run, one column per (label, Column) of `layout`, then each (label, Column)
    of `optional` that at least one run records. Cells are displayed values (a marker's text); the typed cells
    ({Column: value} per run) come back beside it for the answers."""
    cells = [{column: column.value(run) for _, column in (*layout, *optional)} for run in runs]
    shown = list(layout) + [(label, column) for label, column in optional
                            if any(not isinstance(row[column], Missing) for row in cells)]
    frame = pd.DataFrame([[row[column].cell if isinstance(row[column], Missing) else row[column]
                           for _, column in shown] for row in cells], columns=[label for label, _ in shown])
    frame.attrs["columns"] = {column.name for _, column in shown}
    return frame, cells


def runs_in_table_order(df, runs):
    """The runs behind a by-run table's rows, in its order."""
    by_name = {run.name: run for run in runs}
    return [by_name[name] for name in df["run"] if name in by_name]


# ---------------------------------------------------------------------------------------------- answers
def steady_clause(base, other):
    """(measurable, clause) for two (name, row) sides by their steady s/step: measurable False with 'no measurable
    difference ...' when the intervals overlap, True with the gated comparison when they separate, None with a caveat
    when either run has no steady figure (whole-run numbers only)."""
    (base_name, base_row), (other_name, other_row) = base, other
    figures = base_row.get(STEADY_STEP), other_row.get(STEADY_STEP)
    steady = compare(Side(base_name, figures[0]), Side(other_name, figures[1]), "seconds per step")
    if steady is None:
        why = next((f"; {v}" for v in figures if isinstance(v, str) and v != "n/a (no per-step times)"),
                   " without per-step times")
        return None, f"whole-run runtimes{why}: no spread to judge the difference against"
    return not steady.startswith("no measurable difference"), steady


def short_clause(sides):
    """'not enough timed steps to compare (Stage 1: 2, Stage 1 + offload: 2 timed steps; ...)' when a run of the
    (name, run) sides timed its steps but too few for a steady state: its whole-run runtime is then mostly warm-up,
    so no difference, in seconds or percent, is stated from it. None otherwise (older runs that never timed their
    steps keep their whole-run comparison, with its caveat)."""
    short = [(name, count) for name, run in sides if run is not None for count in [too_few_steps(run)]
             if count is not None]
    if not short:
        return None
    return (f"not enough timed steps to compare ({', '.join(f'{name}: {count}' for name, count in short)} timed "
            f"steps; a steady state needs {MIN_STEADY} after the warm-up: run more steps, --max-steps)")


def in_seconds(value):
    return f"{value:.1f} s" if value >= 10 else f"{value:.3g} s"


CPU_OPTIMIZER = ("On a CPU there is no GPU to offload from: both runs keep every state in host memory, so this "
                 "compares the optimizer implementation (DeepSpeedCPUAdam with offload, FusedAdam without), not "
                 "offloading.")


def cpu_optimizer_note(run_a, run_b):
    """CPU_OPTIMIZER where both runs trained on the CPU and one of them offloads (DeepSpeed then swaps FusedAdam for
    DeepSpeedCPUAdam: tests/test_deepspeed_lesson.py checks it on the engines); None on a GPU or an unknown device."""
    runs = (run_a, run_b)
    if None in runs or not all(map(trained_on_cpu, runs)):
        return None
    return CPU_OPTIMIZER if ["offload" in config_of(run) for run in runs].count(True) == 1 else None


def time_answer(label, base, other, base_run, other_run, compared=("deepspeed",)):
    """How `other` (config name, row) compares with `base` in time: gated by the steady s/step intervals where both
    runs timed their steps, else the whole-run train_runtime with a caveat; refused when the runs differ in more
    than `compared` or timed too few steps; None when a runtime is missing. On a CPU an offload pair says what it
    really compares (cpu_optimizer_note)."""
    (base_name, base_row), (other_name, other_row) = base, other
    took, base_seconds = other_row[RUNTIME], base_row[RUNTIME]
    if not (is_number(took) and is_number(base_seconds)):
        return None
    differing = mismatch(base_run, other_run, compared)
    if differing:
        return refused(label, (base_name, other_name), differing)
    short = short_clause(((base_name, base_run), (other_name, other_run)))
    if short:
        return (f"{label}: no measurable difference can be stated: {short}; whole runs {other_name} "
                f"{in_seconds(took)} vs {base_name} {in_seconds(base_seconds)}.")
    note = "".join(f" {note}" for note in [cpu_optimizer_note(base_run, other_run)] if note)
    measurable, clause = steady_clause(base, other)
    if measurable is None:
        return (f"{label}: {other_name} took {change(took, base_seconds)} than {base_name}: {took:.1f} s vs "
                f"{base_seconds:.1f} s ({clause}).{note}")
    # the steady state answers; the whole runs (start-up included) are shown beside it, not compared
    return f"{label}: {clause}; whole runs {took:.1f} s vs {base_seconds:.1f} s.{note}"


def percent(new, old):
    return round((new - old) / old * 100, 1) if is_number(new) and is_number(old) and old else None


OFFLOAD_WHY = "offloading moves the optimizer states (and under ZeRO 3 the parameters) off the GPU"


def _memory_clause(plain, offload, names):
    """How offloading changed memory: the GPU's peak (a rise is flagged as unexpected), else the engine's model
    states per process, else the host's peak."""
    if is_number(plain[PEAK_PER_GPU]) and is_number(offload[PEAK_PER_GPU]):
        clause = compare(Side(names[0], plain[PEAK_PER_GPU]), Side(names[1], offload[PEAK_PER_GPU]),
                         "peak GPU memory per GPU", expect=LOWER_OR_SAME, why=OFFLOAD_WHY)
        if clause.startswith("unexpected"):
            return clause
        return f"peak GPU memory by {percent(offload[PEAK_PER_GPU], plain[PEAK_PER_GPU]):+.1f}%"
    if is_number(plain.get(MODEL_STATES)) and is_number(offload.get(MODEL_STATES)):
        return (f"model states per process (engine) {plain[MODEL_STATES]:.3g} MiB vs {offload[MODEL_STATES]:.3g} MiB, "
                f"kept on {offload.get(STATES_WHERE, 'the CPU')} (no GPU memory measured)")
    host = percent(offload[HOST_PEAK], plain[HOST_PEAK])
    return f"peak host memory by {host:+.1f}% (no GPU memory measured)" if host is not None else "no memory measured"


def offload_answers(by_config, by_run, label):
    """The quiz: how offloading changes train runtime and samples/s, beside the memory it saves; gated by the steady
    s/step intervals where the runs timed their steps, refused where the pair differs in more than the config."""
    answers = []
    for stage in (1, 2, 3):
        plain, offload = by_config.get(f"stage{stage}"), by_config.get(f"stage{stage}_offload")
        if plain is None or offload is None:
            continue
        where = f"{label}, stage {stage}"
        runtime, rate = percent(offload[RUNTIME], plain[RUNTIME]), percent(offload[TRAIN_RATE], plain[TRAIN_RATE])
        if runtime is None or rate is None:
            answers.append(f"{where}: not answerable yet: both runs need a train runtime.")
            continue
        names = (f"Stage {stage}", f"Stage {stage} + offload")
        differing = mismatch(by_run.get(plain["run"]), by_run.get(offload["run"]), ("deepspeed",))
        if differing:
            answers.append(refused(where, names, differing))
            continue
        memory = _memory_clause(plain, offload, names)
        pair = (by_run.get(plain["run"]), by_run.get(offload["run"]))
        short = short_clause(zip(names, pair))
        if short:  # the cells keep the runtimes; no percentage is made of them
            answers.append(f"{where}: offloading: no measurable difference in time can be stated: {short}; whole "
                           f"runs {names[1]} {in_seconds(offload[RUNTIME])} vs {names[0]} "
                           f"{in_seconds(plain[RUNTIME])}; and {memory}.")
            continue
        note = "".join(f" {note}" for note in [cpu_optimizer_note(*pair)] if note)
        measurable, clause = steady_clause((names[0], plain), (names[1], offload))
        if measurable is None:
            answers.append(f"{where}: offloading changed train runtime by {runtime:+.1f}%, samples/s by {rate:+.1f}% "
                           f"and {memory} ({clause}).{note}")
            continue
        # the steady state answers; the whole runs (start-up included) are shown beside it, not compared
        answers.append(f"{where}: offloading: {clause}; whole runs: train runtime {runtime:+.1f}%, samples/s "
                       f"{rate:+.1f}%; and {memory}.{note}")
    return answers
