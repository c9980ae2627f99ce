"""The handout's table layouts, filled from a by-run table (one row per run, columns named in the lesson module).

  * metric_table: `| Metric | Your Value |`, one named row per metric, from one run (the latest completed);
  * metric_columns: the metrics as rows and one column per run picked (2 / 4 / 6 / 8 GPUs, the six ZeRO configs);
A lesson module lists its rows as (handout label, by-run column) pairs, so a table is data, not code.
"""

import re

import pandas as pd

from workshop.report.cells import is_number
from workshop.report.select import run_order

NOT_RUN = "not run yet"


def latest_completed(df, runs, columns=()):
    """(the by-run row of the latest completed run, or the latest of any status; a note saying which it is).
    Runs holding a number in one of `columns` come first: a run without an nvidia-smi log does not hide one with."""
    order = {run.name: run_order(run) for run in runs}
    rows = sorted((row for _, row in df.iterrows()), key=lambda row: order.get(row["run"], ("", 0, row["run"])))
    with_values = [row for row in rows if any(is_number(row.get(_name(c))) for c in columns)]
    rows = with_values or rows
    completed = [row for row in rows if row["status"] == "completed"]
    pick = (completed or rows)[-1]
    which = "the latest completed run" if completed else "the latest run (none completed)"
    which += " with these values" if with_values and len(with_values) < len(df) else ""
    others = [run for run in df["run"] if run != pick["run"]]
    note = f"the cells are from {pick['run']}, {which}" + (
        f"; {len(others)} other run{'s' if len(others) > 1 else ''} exist{'s' if len(others) == 1 else ''}: "
        f"{', '.join(others)} (`--by-run` shows every run)"
        if others else "")
    return pick, note


def _name(column):
    """A layout names a by-run column by its Column (report/columns.py) or, in the lessons not yet moved, its header."""
    return getattr(column, "name", column)


def cell(row, column):
    """The by-run cell, or a marker when the by-run table has no such column (an epoch that was never run)."""
    if row is None:
        return NOT_RUN
    value = row.get(_name(column), "—")
    return "missing (not logged)" if value == "—" else value


def metric_table(row, metrics, value_header):
    """`| Metric | <value_header> |` with one row per (label, by-run column) in `metrics`."""
    shaped = pd.DataFrame([[label, cell(row, column)] for label, column in metrics], columns=["Metric", value_header])
    shaped.attrs["runs"], shaped.attrs["columns"] = {row["run"]}, {_name(column) for _, column in metrics}
    return shaped


def metric_columns(picked, metrics):
    """Metrics as rows, one column per (header, by-run row or None) in `picked`."""
    shaped = pd.DataFrame([[label, *(cell(row, column) for _, row in picked)] for label, column in metrics],
                          columns=["Metric", *(header for header, _ in picked)])
    shaped.attrs["runs"] = {row["run"] for _, row in picked if row is not None}
    shaped.attrs["columns"] = {_name(column) for _, column in metrics}
    return shaped


def sources_note(picked):
    """Which run fills each column: 'columns from: 2 GPUs = weak_scaling-12, ...'."""
    return "columns from: " + ", ".join(f"{header} = {row['run']}" for header, row in picked if row is not None)


def keep_by_run(shaped, df):
    """The handout-shaped table remembers the by-run table it came from: the figures plot runs, not layouts."""
    shaped.attrs["by_run"] = df
    return shaped


def by_run(table):
    """The one-row-per-run table behind a handout-shaped one (itself when it is one already; None stays None)."""
    return table.attrs.get("by_run", table) if table is not None else None


def model_and_data(model, init, subset):
    """The handout's 'Bloom 560M, 500 subset' for a run's model and data."""
    return f"{model_name(model)}{' (random init)' if init == 'random' else ''}, {subset} subset"


def model_name(model):
    """A readable name from a model id: bigscience/bloom-560m -> Bloom 560M, gpt_neox-tiny -> GPT-NeoX Tiny,
    EleutherAI/pythia-1b -> Pythia 1B, Qwen/Qwen2-1.5B -> Qwen2 1.5B, a local folder -> its name.
    Sizes are upper-cased, lower-case words capitalised, words the publisher cased stay as they are."""
    from workshop.shapes import FAMILIES

    name = str(model).rstrip("/").split("/")[-1]
    family = FAMILIES.get(name.removesuffix("-tiny"))
    if family and name.endswith("-tiny"):
        return f"{family['name']} Tiny"
    return " ".join(word.upper() if word[:1].isdigit() else word.title() if word.isalpha() and word.islower()
                    and len(word) > 2 else word for word in re.split(r"[-_]+", name))
