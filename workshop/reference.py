"""The measured GPU reference beside a student's own runs: `reference.show(tables, "baseline")` in a notebook.

Every folder `docs/results/<name>/` holding a `reference.json` is a reference. It names the device, date and
versions the runs ran on, and per lesson the run folders (globs relative to the folder) and the command that made
them; a helper adding new GPU results adds a folder with its own reference.json, nothing else changes:

    {"device": "NVIDIA H100 80GB HBM3 (81559 MiB)", "date": "2026-11-25", "versions": "torch 2.11.0+cu130, ...",
     "about": "docs/results/zero_single_gpu_h100.md",
     "lessons": {"baseline": {"runs": ["logs/baseline-*"], "command": "bash slurm/baseline.slurm --model 560m"}}}

The reference's tables come from its run folders through fill_tables.build_tables, the same code as the student's
tables, so a value a reference run lacks is the same marker (`n/a (not scored)`, ...) with its note, never a guess.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workshop.fill_tables import build_tables, load_runs
from workshop.lessons import BY_NAME

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
YOURS = "your runs"
NOT_IN_REFERENCE = "not in the reference"


@dataclass
class Reference:
    folder: Path
    lesson: str
    device: str
    date: str
    versions: str
    about: str
    command: str
    runs: list  # the run folders its globs matched

    @property
    def label(self):
        """The `source` cell of its rows: the device without its details, and the date."""
        return f"{self.device.split(' (')[0]}, {self.date}"


def _text(spec, path, *keys):
    value = spec
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}: {'.'.join(keys)} must be a non-empty string")
    return value


def read(path):
    """The references of one reference.json, one per lesson it lists; a malformed file raises, naming the key."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    lessons = spec.get("lessons") if isinstance(spec, dict) else None
    if not isinstance(lessons, dict) or not lessons:
        raise ValueError(f"{path}: lessons must map a lesson ({', '.join(BY_NAME)}) to its runs and command")
    references = []
    for lesson, entry in lessons.items():
        if lesson not in BY_NAME:
            raise ValueError(f"{path}: lessons.{lesson} is not a lesson ({', '.join(BY_NAME)})")
        globs = entry.get("runs") if isinstance(entry, dict) else None
        if not isinstance(globs, list) or not globs or not all(isinstance(g, str) for g in globs):
            raise ValueError(f"{path}: lessons.{lesson}.runs must be a list of globs relative to {path.parent}")
        runs = sorted({run for pattern in globs for run in path.parent.glob(pattern) if run.is_dir()})
        references.append(Reference(path.parent, lesson, _text(spec, path, "device"), _text(spec, path, "date"),
                                    spec.get("versions", "not recorded"), spec.get("about", ""),
                                    _text(spec, path, "lessons", lesson, "command"), runs))
    return references


def find(lesson, root=RESULTS):
    """The references of `lesson` under root (every root/*/reference.json), the newest first."""
    found = [ref for path in sorted(Path(root).glob("*/reference.json")) for ref in read(path) if ref.lesson == lesson]
    return sorted(found, key=lambda ref: ref.date, reverse=True)


def _rows(df, source, missing, columns):
    return [{"source": source, **{column: row.get(column, missing) for column in columns}}
            for row in df.to_dict("records")]


def reference_tables(ref, by_run=False):
    """The reference's tables of its lesson, laid out as the student's are. Every run is filed under that lesson
    (benchmarks/bench.py's make-it-fast runs are baseline runs by their manifest)."""
    runs = load_runs(ref.runs)
    for run in runs:
        run.lesson = ref.lesson
    return build_tables(ref.runs, tables=[BY_NAME[ref.lesson]], by_run=by_run, runs=runs)


def _metric_columns(mine, theirs, missing):
    """A `| Metric | Your Value |` table: the reference's values as one more column each, labelled."""
    table = theirs[0][1][["Metric"]].copy()
    if mine is not None:
        for column in mine.columns[1:]:
            table[column] = mine[column].values if len(mine) == len(table) else missing
    for ref, df in theirs:
        for column in df.columns[1:]:
            table[ref.label if len(df.columns) == 2 else f"{column}, {ref.label}"] = df[column].values
    return table


def _stacked_rows(mine, theirs):
    """A table with a row per run or configuration: the reference's rows under the student's, a `source` first."""
    frames = ([mine] if mine is not None else []) + [df for _, df in theirs]
    columns = list(dict.fromkeys(column for df in frames for column in df.columns))
    rows = _rows(mine, YOURS, "—", columns) if mine is not None else []
    for ref, df in theirs:
        rows += _rows(df, ref.label, NOT_IN_REFERENCE, columns)
    return pd.DataFrame(rows, columns=["source", *columns])


def beside(tables, lesson, root=RESULTS, by_run=False):
    """{table key: DataFrame}: for each table of `lesson`, the student's values (from `tables`, build_tables'
    result, laid out as `by_run` says) beside every reference's: a column per reference in the handout's
    `Metric | Your Value` tables, a row per reference run (a `source` column first) in the others. attrs: title,
    notes and answers of the references (the student's own are shown by the lesson's cells);
    attrs["references"]: the Reference objects."""
    built = [(ref, reference_tables(ref, by_run)) for ref in find(lesson, root) if ref.runs]
    keys = list(dict.fromkeys(key for _, theirs in built for key in theirs))
    combined = {}
    for key in keys:
        theirs = [(ref, refs[key]) for ref, refs in built if key in refs]
        mine = tables.get(key)
        if theirs[0][1].columns[0] == "Metric":
            table = _metric_columns(mine, theirs, NOT_IN_REFERENCE)
        else:
            table = _stacked_rows(mine, theirs)
        notes = [f"{ref.label}: {note}" for ref, df in theirs for note in df.attrs["notes"]]
        answers = [f"{ref.label}: {answer}" for ref, df in theirs for answer in df.attrs.get("answers", [])]
        if mine is None:
            notes.insert(0, "no run of yours in this table yet: only the reference's values are shown")
        table.attrs.update(title=f"{theirs[0][1].attrs['title']}: yours beside the GPU reference", notes=notes,
                           answers=answers, references=[ref for ref, _ in theirs])
        combined[key] = table
    return combined


def describe(ref):
    """What a reference is, in one Markdown line: device, date, versions, the command, where its files are."""
    about = f"; details in `{ref.about}`" if ref.about else ""
    folder = ref.folder.relative_to(REPO) if ref.folder.is_relative_to(REPO) else ref.folder
    return (f"**GPU reference: {ref.device}, {ref.date}** ({ref.versions}). Command: `{ref.command}`. "
            f"Run folders: `{folder}/`{about}.")


def show(tables, lesson, root=RESULTS, by_run=False):
    """Display each table of `lesson` with the GPU reference's rows under the student's, labelled; or say that
    docs/results/ holds no reference for the lesson yet."""
    from IPython.display import Markdown, display  # only notebooks call this

    from workshop.notebook import show_table

    references = find(lesson, root)
    if not references:
        display(Markdown(f"*No GPU reference for `{lesson}` in `docs/results/` yet: a folder there with a "
                         f"`reference.json` naming this lesson adds one (see `workshop/reference.py`).*"))
        return
    for ref in references:
        display(Markdown(describe(ref) if ref.runs else f"{describe(ref)} *Its globs match no run folder.*"))
    combined = beside(tables, lesson, root, by_run)
    for key, table in combined.items():
        # Run folder names (several per row in a comparison) would push the table past the notebook's panel; the
        # notes and the reference's folder line above name them.
        show_table(combined, key, columns=[column for column in table.columns if column != "run"])
