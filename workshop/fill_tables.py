"""Fill the exercise tables from whatever logs exist.

    python -m workshop.fill_tables logs/ [more dirs, .out files, nvidia-smi CSVs, psrecord logs]
                                   [--by-run] [--format markdown|csv|json]
    python -m workshop.fill_tables --class DIR [--format ...]   # DIR/<student>/: the class side by side

Every exercise table is printed as the handout lays it out (same rows, columns, units), filled from the latest
completed run of each cell, followed by its quiz questions' computed answers and notes (one line per cause,
naming the runs). `--by-run` prints one row per run instead: an instructor comparing a whole class. `--class DIR`
(one folder of logs per student or team under DIR) prints every table with, per cell, the class's median, range
and how many students have a figure, and names the students whose figure is far from the rest
(workshop/report/classroom.py).

A run is a run folder (`logs/<run_id>/`, see docs/DESIGN.md) or the handout's own logs: a SLURM `.out` with the
nvidia-smi CSV and psrecord log of the same job beside it (see workshop/report/handout_logs.py). Each lesson's
tables live in workshop/lessons/<lesson>.py; the engine that fills them in workshop/report/. A cell the logs
cannot fill holds a short marker such as `n/a (no GPU)`, explained in the notes. Nothing here raises on bad logs,
and nothing reaches for the network (a model outside the shape tables is read from the Hugging Face cache alone).

Notebooks call `build_tables(paths)`: {key: DataFrame}, with df.attrs["title"], ["notes"] and ["answers"].
"""

import argparse
import getpass
import os
import sys
from pathlib import Path

if __name__ == "__main__":  # the CLI never touches the network; huggingface_hub reads this once, when imported
    os.environ["HF_HUB_OFFLINE"] = "1"

from workshop.lessons import LESSONS, ZERO_2GPU, ZERO_CONFIGS, Lesson  # noqa: F401  (importable from here)
from workshop.report import engine, runs as report_runs
from workshop.report.cells import epoch_label, steps_per_epoch  # noqa: F401
from workshop.report.engine import Table  # noqa: F401
from workshop.report.render import render
from workshop.report.runs import Run, find_memory_logs, find_runs  # noqa: F401
from workshop.report.select import config_of, latest_runs, setup_label, setup_of  # noqa: F401


def build_tables(paths, tables=LESSONS, by_run=False, runs=None):
    """{key: DataFrame} of the tables of `tables` (the registry's lessons) filled from the runs under `paths`.
    Runs are filed by the whole registry even when `tables` names one lesson: filed by that lesson alone, another
    lesson's run (a baseline run beside lesson 5's) would be taken for one of its own."""
    runs = load_runs(paths) if runs is None else runs
    return engine.build_tables(paths, tables, by_run=by_run, runs=runs)


def load_runs(paths):
    """Every run under `paths`, each filed under its lesson of the registry."""
    return report_runs.load_runs(paths, LESSONS)


def unreadable_paths(paths):
    """What is wrong with the paths given, or None: one that does not exist (a typo), or that this user may not
    read (a folder would look empty: "no runs found")."""
    missing, unreadable = [], []
    for path in paths:
        try:
            if not Path(path).exists():
                missing.append(path)
            elif not os.access(path, os.R_OK | (os.X_OK * Path(path).is_dir())):
                unreadable.append(path)
        except PermissionError:  # a folder above it this user may not enter
            unreadable.append(path)
    if missing:
        return f"no such file or folder: {', '.join(missing)}"
    if unreadable:
        return f"this user ({getpass.getuser()}) may not read {', '.join(unreadable)}"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m workshop.fill_tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=[],
                        help="log dirs, .out files, nvidia-smi CSVs or psrecord logs (default: logs)")
    parser.add_argument("--by-run", action="store_true", help="one row per run instead of the handout's layout")
    parser.add_argument("--format", choices=["markdown", "csv", "json"], default="markdown",
                        help="markdown (with answers and notes), csv (one block per table, after a '# key' line), json")
    parser.add_argument("--class", dest="class_dir", metavar="DIR",
                        help="DIR holds one folder of logs per student: the class's median, range and count per cell")
    args = parser.parse_args(argv)
    if args.class_dir:
        return class_main(args)
    args.paths = args.paths or ["logs"]
    problem = unreadable_paths(args.paths)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    run_dirs, outs = find_runs(args.paths)
    found = len(run_dirs) + len(outs) + len(find_memory_logs(args.paths))
    if not found:
        print(f"no runs found under {', '.join(args.paths)}: `bash {LESSONS[0].scripts[0]} --profile tiny` makes "
              "one (or `bash scripts/run_workshop.sh` for every lesson)")
        return 0
    tables = build_tables(args.paths, by_run=args.by_run)
    if not tables:
        print(f"no tables yet for the lessons of the {found} runs under {', '.join(args.paths)}")
        return 0
    print(render(tables, args.format))
    return 0


def class_main(args):
    from workshop.report.classroom import class_tables

    folder = Path(args.class_dir)
    students = sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []
    if args.by_run or args.paths:
        print("error: --class DIR reads only DIR's student folders, one table for the class (no --by-run, no paths)",
              file=sys.stderr)
        return 2
    if not students:
        print(f"error: {folder} holds no student folders: put each student's logs/ in {folder}/<name>/",
              file=sys.stderr)
        return 2
    tables = class_tables({student.name: build_tables([student]) for student in students})
    if not tables:
        print(f"no tables yet: none of the {len(students)} student folders under {folder} holds a run")
        return 0
    print(render(tables, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
