"""Notebook helpers: start a lesson's run when a classroom has none yet, and show a filled table.

    from workshop import notebook
    runs = notebook.ensure_run("../logs", "baseline", "slurm/baseline.slurm", ["--profile", "tiny"])
    runs = notebook.ensure_configs("../logs", ["stage2_offload", "stage2_offload_nopin"], ["--profile", "tiny"])
    runs = notebook.ensure_scripts("../logs", "precision_and_checkpointing",
                                   [("precision-stage2-bf16", "slurm/precision.slurm", ["stage2", "bf16"])])
    notebook.show_table(tables, "baseline_objective_1")
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import warnings

from workshop.lessons import LESSONS
from workshop.logparse import Missing
from workshop.report.figures import as_runs
from workshop.report.render import render
from workshop.report.select import config_of
from workshop.report.shapes import by_run

REPO = Path(__file__).resolve().parents[1]
# transformers imports tqdm.auto, which in a Jupyter kernel without ipywidgets warns on stderr that it falls back to
# text bars: a red box in the middle of a lesson about something else. The notebooks import this module first.
warnings.filterwarnings("ignore", message="IProgress not found")


def ensure_run(logs, lesson, script, args=(), run=True, tail=15):
    """The runs of `lesson` under `logs`. When there are none and `run` is true, first runs
    `bash <repo>/<script> <args>` (e.g. slurm/baseline.slurm --profile tiny) and prints its output's tail,
    so a notebook works in a classroom where nothing has run yet.

    The .slurm files write their run folder under the repository's logs/; when `logs` is elsewhere (a test's
    tmp dir), the new run folder is moved there and checkpoints go to an `outputs/` folder beside `logs`.
    """
    found = as_runs([logs], LESSONS, lesson)  # a logs folder that does not exist yet just holds no runs
    if found or not run:
        if not found:
            print(without_paths(f"no {lesson} run under {logs}: run `bash {script} {' '.join(args)}` from the "
                                "repository root"))
        return found

    _run_script(logs, script, args, lesson, tail)
    return as_runs([logs], LESSONS, lesson)


def ensure_configs(logs, configs, args=(), run=True, tail=15):
    """Lesson 2's runs under `logs`, after running `bash slurm/<config>.slurm <args>` for each of `configs`
    that has no run there yet (when `run` is true); as ensure_run, one configuration at a time."""
    return ensure_scripts(logs, "deepspeed_single_gpu", [(c, f"slurm/{c}.slurm", []) for c in configs], args, run,
                          tail)


def _run_script(logs, script, args, name, tail):
    """`bash <repo>/<script> <args>`, printing its output's tail; the run folder it writes ends up under `logs`
    and, when `logs` is not the repository's logs/, checkpoints under `outputs/<name>` beside it."""
    logs = Path(logs).resolve()
    command = ["bash", str(REPO / script), *args]
    elsewhere = logs != (REPO / "logs").resolve()
    if elsewhere and not any(arg.startswith("--output-dir") for arg in args):
        command += ["--output-dir", str(logs.parent / "outputs" / name)]
    # The .slurm file runs `python` from PATH unless told otherwise: use this kernel's interpreter (the venv).
    env = {**os.environ, "WORKSHOP_PYTHON": os.environ.get("WORKSHOP_PYTHON", sys.executable)}
    print(without_paths(f"no {name} run under {logs}; running:\n  {' '.join(command)}"))
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]  # splitlines also splits tqdm's \r
    if done.returncode == 0:  # the run's own progress lines (often after tqdm's bar); a failure shows everything
        lines = [line[line.index("[workshop]"):] for line in lines if "[workshop]" in line]
    print(without_paths("...\n" + "\n".join(lines[-tail:])))
    if done.returncode != 0:
        print(f"the run exited with status {done.returncode}: its run folder (if any) still shows how far it got")

    # common.sh announces its folder as "[workshop] run <run id> on <host>: <absolute run folder>".
    announced = re.search(r"^\[workshop\] run (\S+) on \S+: (.+)$", done.stdout, re.MULTILINE)
    if announced and elsewhere and Path(announced.group(2)).is_dir():
        logs.mkdir(parents=True, exist_ok=True)
        shutil.move(announced.group(2), logs / announced.group(1))
        print(f"moved the run folder to {shown_path(logs / announced.group(1))}")


def ensure_scripts(logs, lesson, runs, args=(), run=True, tail=15):
    """The runs of `lesson` under `logs`, after running each of `runs` that has no run there yet: (run name,
    script, its own arguments), e.g. ("precision-stage2-bf16", "slurm/precision.slurm", ["stage2", "bf16"]), then
    `args` (when `run` is true; otherwise the command to type is printed). As ensure_configs, one at a time."""
    have = {config_of(r) for r in as_runs([logs], LESSONS, lesson)}
    for name, script, script_args in runs:
        if name in have:
            continue
        if run:
            _run_script(logs, script, [*script_args, *args], name, tail)
        else:
            print(without_paths(f"no {name} run under {logs}: run `bash {script} "
                                f"{' '.join([*script_args, *args])}` from the repository root"))
    return as_runs([logs], LESSONS, lesson)


# ---------------------------------------------------------------------------------------------- showing tables
# A notebook shows what `python -m workshop.fill_tables` prints: the same cells, the same rounding (render's), as
# a Markdown table, so headers stay words and nothing falls back to a DataFrame's own display.

_ABSOLUTE = re.compile(r"(?<![\w.~])/(?:[^\s/`'\"(),;:|]+/)+[^\s/`'\"(),;:|]*")
_NUMBERED = re.compile(r"^(\d+)\.(?= )")  # a quiz answer's number: Markdown would make a list inside the list
_BLANK = ("missing", "n/a", "not run yet", "not in the reference", "—")  # the report's markers begin so


def shown_path(path):
    """A path as a notebook shows it: relative to the repository when inside it, else its last two parts (the run
    folder and the file), so no machine's home, scratch or temp folder ends up in a lesson's output."""
    path = Path(path)
    if path.is_relative_to(REPO):
        return str(path.relative_to(REPO)) or "."
    return str(Path(*path.parts[-2:])) if len(path.parts) > 2 else str(path)


def without_paths(text):
    """`text` with every absolute path in it shown as shown_path shows it."""
    return _ABSOLUTE.sub(lambda found: shown_path(found.group(0)), str(text))


def _blank(value):
    """True for a cell that holds no measurement: a Missing, or a marker such as `n/a (no GPU)`."""
    return isinstance(value, Missing) or (isinstance(value, str) and value.startswith(_BLANK))


def lesson_view(df, columns=None):
    """The table a notebook shows: `columns` only (all when None), no absolute paths, and in a table with a row per
    run (a `run` column) no column without a single number (an nvidia-smi column on runs that had none): one note
    says it is left out, and the per-run notes about markers found only there go with it. A handout layout keeps
    every column, as the handout prints them."""
    view = df[[c for c in columns if c in df.columns]] if columns else df.copy()
    notes, dropped = list(df.attrs.get("notes", [])), []
    if len(view) > 1 and "run" in df.columns:  # df's: a reference's view shows a `source` in its place
        dropped = [column for column in view.columns[1:] if view[column].map(_blank).all()]
    kept = {str(value) for column in view.columns if column not in dropped for value in view[column]}
    gone = {str(value) for column in dropped for value in view[column]} - kept
    notes = [note for note in notes if not any(f"`{marker}`" in note for marker in gone)]
    for column in dropped:
        markers = ", ".join(f"`{marker}`" for marker in dict.fromkeys(map(str, view[column])))
        notes.append(f"{column}: left out, no row has a number ({markers})")
    view = view.drop(columns=dropped)
    view = view.apply(lambda column: column.map(lambda v: without_paths(v) if isinstance(v, (str, Missing)) else v))
    view.attrs.update(title=without_paths(df.attrs.get("title", "")), notes=[without_paths(n) for n in notes],
                      answers=[_NUMBERED.sub(r"\1\\.", without_paths(a)) for a in df.attrs.get("answers", [])])
    return view


def table_markdown(df, columns=None):
    """Title (a level-4 heading), the table with the CLI's rounding, the quiz answers and the notes, as Markdown."""
    text = render({"table": lesson_view(df, columns)}, "markdown")
    return "#### " + text.removeprefix("## ")


def show_table(tables, key, columns=None):
    """Display one table of fill_tables.build_tables as a lesson table (table_markdown): `columns` picks a
    narrower view where the page needs one."""
    df = tables.get(key)
    if df is None:
        _display_markdown(f"*no runs yet for table `{key}`*")
        return
    show_frame(df, columns)


def show_frame(df, columns=None):
    """Display a table (a DataFrame with attrs title, notes and answers) as a lesson table."""
    _display_markdown(table_markdown(df, columns))


def _display_markdown(text):
    from IPython.display import Markdown, display  # only notebooks call this

    display(Markdown(text))


def show_runs(tables, key, label, hide=("run",)):
    """The runs behind a handout-shaped table (what `fill_tables --by-run` prints), turned on its side so it fits
    the page: one row per measurement, one column per run named by its `label` column (a config in words); the
    run folders are named in a note."""
    from workshop.report.zero import config_label

    df = by_run(tables.get(key))
    if df is None or df.empty:
        _display_markdown(f"*no runs yet for table `{key}`*")
        return
    names = [config_label(value) if isinstance(value, str) else str(value) for value in df[label]]
    turned = df.drop(columns=[label, *hide]).T.reset_index()
    turned.columns = ["Measurement", *names]
    turned.attrs.update(title=f"{tables[key].attrs['title']}: every measurement, per run", answers=[],
                        notes=["columns from: " + ", ".join(f"{name} = {run}" for name, run in zip(names, df["run"]))]
                        + list(df.attrs.get("notes", [])))
    show_frame(turned)
