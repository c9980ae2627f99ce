"""Lesson 5's figures, from its tables (build_tables(...)["precision"] / ["gradient_checkpointing"]): grouped bars,
one per precision or per checkpointing setting. A cell without a number gets no bar."""

from matplotlib.figure import Figure

from workshop.report.figures import grouped_bars, legend_all

PRECISIONS = ("fp32", "fp16", "bf16")
TOKENS = "real tokens/s"


def precision_bars(table):
    """Lesson 5: real tokens/s (top) and peak GPU memory (bottom) per ZeRO stage, one bar per precision, from the
    precision table (build_tables(...)["precision"], or None). A cell without a number gets no bar."""
    fig = Figure(figsize=(9, 7.5), layout="constrained")
    top, bottom = fig.subplots(2, 1)
    rows = [] if table is None else [row for _, row in table.iterrows()]
    groups = [f"{row['stage']}\n{row['model']}" for row in rows]
    notes = []
    for ax, column, unit in ((top, TOKENS, "real tokens/s"), (bottom, "peak GPU MiB", "MiB")):
        values = {(group, p): row[f"{p} {column}"] for group, row in zip(groups, rows) for p in PRECISIONS}
        drawn = grouped_bars(ax, groups, PRECISIONS, values, unit)
        ax.set_title(f"{column} by ZeRO stage and precision", fontsize=11)
        notes += [f"{column}: no {p} numbers (see the table's notes)" for p in PRECISIONS if drawn and p not in drawn]
    return legend_all(fig, [top, bottom], notes)


def checkpointing_bars(table):
    """Lesson 5: peak GPU memory (left) and seconds per step (right) without and with gradient checkpointing, one
    group per model, stage and precision, from build_tables(...)["gradient_checkpointing"] (or None)."""
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    rows = [] if table is None else [row for _, row in table.iterrows()]
    groups = [f"{row['stage']}, {row['precision']}\n{row['model']}" for row in rows]
    notes = []
    for ax, column, unit in ((left, "peak GPU MiB", "MiB"), (right, "s/step", "seconds per optimizer step")):
        values = {(group, f"checkpointing {w}"): row[f"{column} {w}"] for group, row in zip(groups, rows)
                  for w in ("without", "with")}
        series = ("checkpointing without", "checkpointing with")
        drawn = grouped_bars(ax, groups, series, values, unit)
        ax.set_title(column, fontsize=11)
        notes += [f"{column}: no numbers {s.split()[-1]} checkpointing (see the table's notes)"
                  for s in series if drawn and s not in drawn]
    fig.suptitle("Without vs with gradient checkpointing", fontsize=12)
    return legend_all(fig, [left, right], notes)
