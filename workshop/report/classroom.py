"""The class side by side: every exercise table with, per cell, the class's median, range and how many students
ran it, and the students whose figure is far from the rest named (their run had a problem worth a look).

Each student's (or team's) tables are built as usual from their own folder; this module only lines them up: rows
by the table's first column (the handout's row label), columns by name. A cell no student filled keeps the marker
most students got (`n/a (no GPU)`), so the notes under it still explain it.
"""

import statistics
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

# A figure is far from the rest when it is further from the class median than FAR_MADS scaled median absolute
# deviations and FAR_RELATIVE of the median: tiny runs on shared laptops differ by tens of percent anyway, and a
# class of identical figures (MAD 0) would otherwise name anyone a rounding apart.
FAR_MADS = 3.0
FAR_RELATIVE = 0.25
MIN_FOR_FAR = 3  # with two students there is no "rest" to be far from


@dataclass
class ClassCell:
    """One cell of the class's table: the students' figures, or why there are none."""
    figures: dict = field(default_factory=dict)  # student -> float
    missing: str = ""  # the marker most students got, when nobody has a figure
    far: list = field(default_factory=list)  # the students far from the rest

    @property
    def value(self):
        return statistics.median(self.figures.values()) if self.figures else None

    def __str__(self):
        if not self.figures:
            return self.missing or "—"
        low, high = min(self.figures.values()), max(self.figures.values())
        spread = "" if low == high else f" ({_number(low)}–{_number(high)})"
        return f"{_number(self.value)}{spread}, n={len(self.figures)}"

    def as_json(self):
        return {"median": self.value, "min": min(self.figures.values(), default=None),
                "max": max(self.figures.values(), default=None), "n": len(self.figures),
                "figures": self.figures, "far": self.far, "missing": self.missing or None, "display": str(self)}


def _number(value):
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _figure(value):
    """A cell's number: a plain number, or a steady figure's median (report/spread.py); None for a marker."""
    if hasattr(value, "as_json") and hasattr(value, "value"):
        value = value.value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def far_students(figures: dict) -> list:
    if len(figures) < MIN_FOR_FAR:
        return []
    median = statistics.median(figures.values())
    mad = 1.4826 * statistics.median(abs(x - median) for x in figures.values())  # a normal's sigma
    return sorted(student for student, x in figures.items()
                  if abs(x - median) > FAR_MADS * mad and abs(x - median) > FAR_RELATIVE * abs(median))


def _merge_cells(values: dict) -> ClassCell:
    figures = {student: x for student, value in values.items() if (x := _figure(value)) is not None}
    texts = Counter(str(value) for value in values.values() if _figure(value) is None)
    missing = ""
    if texts and not figures:  # a marker, or a text cell (a runtime with its steps): the most common, and how many
        missing, count = texts.most_common(1)[0]
        missing += "" if count == len(values) else f" ({count} of {len(values)} students)"
    cell = ClassCell(figures, missing)
    cell.far = far_students(figures)
    return cell


def _labels(per_student):
    """The leading columns that name a row (text in every student's table, before the first figure)."""
    first = next(iter(per_student.values()))
    labels = []
    for column in first.columns[:-1]:
        if any(_figure(v) is not None for df in per_student.values() if column in df for v in df[column]):
            break
        labels.append(column)
    return labels or [first.columns[0]]


def class_table(per_student: dict):
    """{student: DataFrame of one table} -> the class's DataFrame (rows by their label columns), its notes naming
    the far students."""
    labels = _labels(per_student)
    rows, columns = {}, []
    for student, df in per_student.items():
        columns += [c for c in df.columns if c not in columns and c not in labels]
        for record in df.to_dict("records"):
            rows.setdefault(tuple(str(record[label]) for label in labels), {}).setdefault(student, record)
    named = {column: column.replace("Your Value", "Class") for column in columns}  # the handout's header
    out, notes = [], []
    for key, by_student in rows.items():
        row = dict(zip(labels, key))
        for column in columns:
            cell = _merge_cells({s: r[column] for s, r in by_student.items() if column in r})
            row[column] = cell
            where = ", ".join(key) if len(columns) == 1 else f"{', '.join(key)}, {named[column]}"
            notes += [f"{student}: {where} {_number(cell.figures[student])} against the class's median "
                      f"{_number(cell.value)}: far from the rest, worth a look" for student in cell.far]
        out.append(row)
    return pd.DataFrame(out, columns=[*labels, *columns]).rename(columns=named), notes


def _student_notes(per_student):
    """Each student's notes under the table, once per text, with the students who got it."""
    who = {}
    for student, df in per_student.items():
        for note in df.attrs.get("notes", []):
            who.setdefault(note, []).append(student)
    return [f"{', '.join(students)}: {note}" for note, students in who.items()]


def class_tables(tables_by_student: dict) -> dict:
    """{student: {key: DataFrame}} (each student's fill_tables) -> {key: DataFrame} of the class, each cell a
    ClassCell; attrs: title, answers (none: a quiz is each student's), notes (far students, then who ran it)."""
    keys = list(dict.fromkeys(key for tables in tables_by_student.values() for key in tables))
    built = {}
    for key in keys:
        per_student = {s: tables[key] for s, tables in tables_by_student.items() if key in tables}
        df, notes = class_table(per_student)
        df.attrs["title"] = per_student[next(iter(per_student))].attrs["title"] + \
            " — the class: median (min–max), n students with a figure"
        df.attrs["answers"] = []
        df.attrs["notes"] = notes + [f"{len(per_student)} of {len(tables_by_student)} students have this table: "
                                     f"{', '.join(per_student)}"] + _student_notes(per_student)
        built[key] = df
    return built
