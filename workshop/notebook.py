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

import pandas as pd

from workshop.lessons import LESSONS
from workshop.report.figures import as_runs
from workshop.report.select import config_of

REPO = Path(__file__).resolve().parents[1]


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
            print(f"no {lesson} run under {logs}: run `bash {script} {' '.join(args)}` from the repository root")
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
    print(f"no {name} run under {logs}; running:\n  {' '.join(command)}")
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]  # splitlines also splits tqdm's \r
    if done.returncode == 0:  # the run's own progress lines (often after tqdm's bar); a failure shows everything
        lines = [line[line.index("[workshop]"):] for line in lines if "[workshop]" in line]
    print("...\n" + "\n".join(lines[-tail:]))
    if done.returncode != 0:
        print(f"the run exited with status {done.returncode}: its run folder (if any) still shows how far it got")

    # common.sh announces its folder as "[workshop] run <run id> on <host>: <absolute run folder>".
    announced = re.search(r"^\[workshop\] run (\S+) on \S+: (.+)$", done.stdout, re.MULTILINE)
    if announced and elsewhere and Path(announced.group(2)).is_dir():
        logs.mkdir(parents=True, exist_ok=True)
        shutil.move(announced.group(2), logs / announced.group(1))
        print(f"moved the run folder to {logs / announced.group(1)}")


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
            print(f"no {name} run under {logs}: run `bash {script} {' '.join([*script_args, *args])}` from the "
                  "repository root")
    return as_runs([logs], LESSONS, lesson)


def show_table(tables, key):
    """Display one table of fill_tables.build_tables: its title, the DataFrame, and the notes under it."""
    from IPython.display import Markdown, display  # only notebooks call this

    df = tables.get(key)
    if df is None:
        display(Markdown(f"*no runs yet for table `{key}`*"))
        return
    display(Markdown(f"#### {df.attrs['title']}"))
    with pd.option_context("display.precision", 4):  # losses to 4 decimals, not 6
        display(df)
    if df.attrs.get("answers"):  # quiz answers computed from the rows (lesson 2)
        display(Markdown("**Answers:**\n" + "\n".join(f"- {answer}" for answer in df.attrs["answers"])))
    if df.attrs["notes"]:
        display(Markdown("Notes:\n" + "\n".join(f"- {note}" for note in df.attrs["notes"])))

