"""The report engine: lessons declare tables, `build_tables` fills them from whatever runs exist.

    from workshop.lessons import Lesson
    from workshop.report.engine import Table
    lesson = Lesson("baseline", folder="baseline", tables=(Table("baseline_objective_1", "...", row),))
    build_tables(["logs"], [lesson])

The engine imports no lesson: its caller passes them (workshop.fill_tables passes the registry's).

A Table's `make` is either `row(run) -> dict` (each_run: one row per run of the lesson) or
`build(runs) -> (rows, answers, notes)` for tables that pick runs and compare them. Cells are numbers or
`Missing` markers; the marker's detail becomes one note under the table. A table with a handout layout answers
its quiz there, once: the by-run view shows the same answers.
"""

from dataclasses import dataclass
from typing import Callable, Optional

import pandas as pd

from workshop.logparse import Missing
from workshop.report.notes import merge_notes
from workshop.report.runs import load_runs


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    make: Callable
    each_run: bool = True
    # (by-run DataFrame, the lesson's runs) -> [(key, title, DataFrame, answers, notes)]: the handout's layout
    handout: Optional[Callable] = None


def _by_run_table(table, members):
    if table.each_run:
        rows, answers, notes = [table.make(run) for run in members], [], [n for run in members for n in run.notes]
    else:
        rows, answers, notes = table.make(members)
    note_columns = {}  # a cell's note -> the columns it explains (the handout's layout shows some of them)
    for row in rows:
        for column, value in row.items():
            if isinstance(value, Missing):
                row[column] = value.cell
                if value.detail:
                    note = f"{row.get('run', '?')}: `{value.cell}` — {value.detail}"
                    notes.append(note)
                    note_columns.setdefault(note, set()).add(column)
    if not rows:
        return None
    # A column only some runs have (an eval at a 4th epoch, say) is "—" for the others; a NaN in a cell stays a
    # real NaN: a diverged loss.
    columns = list(dict.fromkeys(column for row in rows for column in row))
    df = pd.DataFrame([[row.get(c, "—") for c in columns] for row in rows], columns=columns)
    df.attrs["title"], df.attrs["notes"], df.attrs["answers"] = table.title, merge_notes(notes), list(answers)
    df.attrs["raw_notes"], df.attrs["note_columns"] = notes, note_columns
    return df


def _shown(notes, shaped, note_columns):
    """The by-run notes that explain what the handout's layout shows: of the runs behind its cells (attrs["runs"]),
    of the by-run columns it shows (attrs["columns"]) and, for a cell's marker, only markers that appear in it."""
    runs, used = shaped.attrs.get("runs"), shaped.attrs.get("columns")
    notes = [note for note in notes if used is None or note not in note_columns or note_columns[note] & used]
    cells = {str(value) for column in shaped.columns for value in shaped[column]}
    kept = []
    for note in notes:
        run, _, cause = note.partition(": ")
        if note.startswith("`"):  # a by-run column's description, or a marker note without a run
            run, cause = None, note
        marker = cause[1:].partition("`")[0] if cause.startswith("`") else None
        if (runs is None or run in runs or not cause) and (marker is None or any(marker in c for c in cells)):
            kept.append(note)
    return kept


def build_tables(paths, lessons, by_run=False, runs=None):
    """{key: DataFrame} for every table that has at least one run; markers are strings in the cells.
    `lessons`: the lessons whose tables to build (workshop.lessons.LESSONS: all). By default each table is
    laid out as the handout lays it out; `by_run=True` gives one row per run instead (an instructor's view).
    df.attrs["title"] is the table's title, df.attrs["notes"] the lines that explain its markers,
    df.attrs["answers"] the quiz answers computed from its cells."""
    runs = load_runs(paths, lessons) if runs is None else runs
    built = {}
    for lesson in lessons:
        members = [run for run in runs if run.lesson == lesson.name]
        for table in lesson.table_defs():
            df = _by_run_table(table, members)
            if df is None:
                continue
            if table.handout is None:
                df.attrs.pop("raw_notes")
                df.attrs.pop("note_columns")
                built[table.key] = df
                continue
            shapes = table.handout(df, members)
            if by_run:  # the quiz answers are the handout layout's, computed there once
                df.attrs["answers"] = [answer for *_, answers, _ in shapes for answer in answers]
                df.attrs.pop("raw_notes")
                df.attrs.pop("note_columns")
                built[table.key] = df
                continue
            for key, title, shaped, answers, notes in shapes:
                shaped.attrs["title"], shaped.attrs["answers"] = title, list(answers)
                shown = _shown(df.attrs["raw_notes"], shaped, df.attrs["note_columns"])
                shaped.attrs["notes"] = merge_notes(list(notes) + shown)
                for internal in ("raw_notes", "note_columns", "columns"):
                    shaped.attrs.pop(internal, None)
                built[key] = shaped
    return built
