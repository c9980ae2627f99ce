"""docs/adding_a_lesson.md, followed step by step on a copy of the repository: a throw-away lesson made that way
touches three files outside its folder, notebook and tests, passes the registry check, is walked through by
`python -m workshop.lessons walkthrough`, and fill_tables fills its table from the run."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from test_deepspeed_lesson import OFFLINE
from test_slurm import job_env

REPO = Path(__file__).resolve().parents[1]
ENTRY = '''    # New Code #: this lesson's runs fill its own table (workshop/lessons/echo.py)
    main(lesson="echo")
'''
SCRIPT = '''#!/bin/bash
# A throw-away lesson (tests/test_adding_a_lesson.py): the baseline's training filed under lesson "echo".
#SBATCH --job-name=echo --output=logs/%x-%j.out
#SBATCH --nodes=1 --ntasks=1 --cpus-per-task=2 --mem=8G --time=00:30:00
source "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}/slurm/common.sh" || exit 1
workshop_run echo -- "$PYTHON" echo/train.py "$@"
'''
TABLES = '''"""The throw-away lesson's one table: each run's last training loss."""
from workshop.report.cells import manifest_of
from workshop.report.engine import Table


def last_loss(run):
    losses = [event["loss"] for event in run.events if "loss" in event]
    return {"run": run.name, "steps": manifest_of(run).get("steps_done"), "last train loss": losses[-1]}


TABLES = (Table("echo_loss", "Echo: the last training loss", last_loss),)
'''
LESSON = '''
LESSONS += (Lesson("echo", folder="echo", notebook="99_echo.ipynb", tables="workshop.lessons.echo",
                   scripts=("slurm/echo.slurm",), walkthrough=(("slurm/echo.slurm",),),
                   walkthrough_args=("--max-steps", "2", "--save-strategy", "no", "--no-save-final")),)
BY_NAME = {lesson.name: lesson for lesson in LESSONS}
FOLDERS = tuple(dict.fromkeys(lesson.folder for lesson in LESSONS))
'''
CHECK = ("import json, sys; from pathlib import Path; sys.path.insert(0, 'tests')\n"
         "from test_registry import registry_problems; from workshop.lessons import LESSONS\n"
         "print(json.dumps(registry_problems(Path('.'), LESSONS)))")


def tracked_files():
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    return [name for name in names if name and (REPO / name).is_file() and not name.startswith("docs/results/")]


def digests(root, names):
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in names if (root / name).is_file()}


@pytest.mark.slow
def test_a_lesson_added_by_the_documented_steps_is_walked_through_and_filled(tmp_path):
    copy = tmp_path / "repo"
    names = tracked_files()
    for name in names:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((REPO / name).read_bytes())
    before = digests(copy, names)

    # the steps of docs/adding_a_lesson.md
    baseline = (REPO / "baseline" / "train.py").read_text()
    (copy / "echo").mkdir()
    (copy / "echo" / "train.py").write_text(baseline.replace('    main(lesson="baseline")\n', ENTRY))
    (copy / "slurm" / "echo.slurm").write_text(SCRIPT)
    (copy / "workshop" / "lessons" / "echo.py").write_text(TABLES)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("from workshop.lessons import echo")]),
                   copy / "notebooks" / "99_echo.ipynb")
    with open(copy / "workshop" / "lessons" / "__init__.py", "a") as registry:
        registry.write(LESSON)

    after = digests(copy, [*names, "slurm/echo.slurm", "workshop/lessons/echo.py"])
    touched = sorted(name for name in after if before.get(name) != after[name])
    assert touched == ["slurm/echo.slurm", "workshop/lessons/__init__.py", "workshop/lessons/echo.py"]

    env = {**job_env(), **OFFLINE, "PYTHONPATH": str(copy)}
    checked = subprocess.run([sys.executable, "-c", CHECK], cwd=copy, env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout) == []

    walk = subprocess.run([sys.executable, "-m", "workshop.lessons", "walkthrough", "echo"], cwd=copy, env=env,
                          capture_output=True, text=True)
    assert walk.stdout == ("echo slurm/echo.slurm --profile tiny --max-steps 2 --save-strategy no "
                           "--no-save-final\n"), walk.stderr
    run = subprocess.run(["bash", *walk.stdout.split()[1:]], cwd=copy, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    filled = subprocess.run([sys.executable, "-m", "workshop.fill_tables", "logs", "--format", "json"], cwd=copy,
                            env=env, capture_output=True, text=True)
    assert filled.returncode == 0, filled.stderr
    [row] = json.loads(filled.stdout)["echo_loss"]["rows"]
    assert row["run"].startswith("echo-local") and row["steps"] == 2 and row["last train loss"] > 0
    assert not os.path.exists(REPO / "echo")
