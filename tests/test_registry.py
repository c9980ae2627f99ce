"""The lesson registry is the one index of a lesson: every lesson folder, slurm/ script, notebook and DeepSpeed
config in the repository is named by exactly one lesson (or is shared), and everything a lesson names exists.
The shell scripts ask the registry (`python -m workshop.lessons ...`) instead of keeping lists of their own."""

import importlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from workshop.lessons import LESSONS, SHARED_SCRIPTS, ZERO_CONFIGS

REPO = Path(__file__).resolve().parents[1]


def registry_problems(repo, lessons):
    """What the repository holds that no lesson names, and what a lesson names that the repository lacks."""
    problems = []
    found = {
        # a folder with a train.py entry that is not a package (workshop/train.py is the package's)
        "lesson folder": {path.parent.name for path in repo.glob("*/train.py")
                          if not (path.parent / "__init__.py").exists()},
        "script": {f"slurm/{path.name}" for path in (repo / "slurm").iterdir()} - set(SHARED_SCRIPTS),
        "notebook": {path.name for path in (repo / "notebooks").glob("*.ipynb")},
        "DeepSpeed config": {path.stem for path in (repo / "deepspeed_single_gpu" / "configs").glob("*.json")},
    }
    named = {
        "lesson folder": [lesson.folder for lesson in lessons],
        "script": [script for lesson in lessons for script in lesson.scripts],
        "notebook": [lesson.notebook for lesson in lessons],
        "DeepSpeed config": [config for lesson in lessons for config in lesson.configs],
    }
    for kind, names in named.items():
        problems += [f"{kind} {name} exists but no lesson names it" for name in sorted(found[kind] - set(names))]
        problems += [f"{kind} {name} is named but missing" for name in sorted(set(names) - found[kind])]
    owners = {}
    for lesson in lessons:
        for name in (lesson.folder, lesson.notebook, *lesson.scripts):
            owners.setdefault(name, []).append(lesson.name)
        problems += [f"{lesson.name}: walk-through script {run[0]} is not one of its scripts"
                     for run in lesson.walkthrough if run[0] not in lesson.scripts]
        if not (repo / lesson.entry).is_file():
            problems.append(f"{lesson.name}: no entry {lesson.entry}")
    problems += [f"{name} is named by {', '.join(who)}" for name, who in owners.items() if len(who) > 1]
    return problems


def test_the_repository_and_the_registry_name_the_same_lessons():
    assert registry_problems(REPO, LESSONS) == []


def test_the_check_sees_a_file_no_lesson_names_and_a_name_with_no_file(tmp_path):
    copy = tmp_path / "repo"
    for folder in ("slurm", "notebooks", *{lesson.folder for lesson in LESSONS}):
        shutil.copytree(REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "slurm" / "dpo.slurm").write_text("#!/bin/bash\n")
    (copy / "notebooks" / "07_dpo.ipynb").write_text("{}")
    (copy / "dpo").mkdir()
    (copy / "dpo" / "train.py").write_text("")
    (copy / "notebooks" / LESSONS[-1].notebook).unlink()
    assert registry_problems(copy, LESSONS) == [
        "lesson folder dpo exists but no lesson names it",
        "script slurm/dpo.slurm exists but no lesson names it",
        "notebook 07_dpo.ipynb exists but no lesson names it",
        f"notebook {LESSONS[-1].notebook} is named but missing",
    ]


def test_every_lesson_fills_tables_from_its_own_module():
    for lesson in LESSONS:
        assert lesson.tables == f"workshop.lessons.{lesson.name}"
        assert importlib.import_module(lesson.tables).TABLES, lesson.name


def test_lesson_2_walks_every_config_but_nvme_and_lesson_2_and_3_share_its_configs():
    [single] = [lesson for lesson in LESSONS if lesson.name == "deepspeed_single_gpu"]
    assert single.configs == ZERO_CONFIGS
    walked = [run[0] for run in single.walkthrough]
    assert walked == [f"slurm/{config}.slurm" for config in ZERO_CONFIGS if config != "stage3_offload_nvme"]
    for lesson in LESSONS:
        assert set(lesson.configs) <= set(ZERO_CONFIGS), lesson.name


def query(*argv):
    return subprocess.run([sys.executable, "-m", "workshop.lessons", *argv], cwd=REPO, capture_output=True, text=True)


def test_the_shell_scripts_query_answers_from_the_registry():
    walk = query("walkthrough")
    assert walk.returncode == 0, walk.stderr
    lines = [line.split(" ", 1) for line in walk.stdout.splitlines()]
    assert lines == [[lesson.name, shlex.join(command)] for lesson in LESSONS
                     for command in lesson.walkthrough_commands()]
    assert query("walkthrough", "make_it_fast").stdout == "make_it_fast slurm/fast.slurm --profile tiny\n"
    assert query("entry", "precision_and_checkpointing").stdout == "precision_and_checkpointing/train.py\n"
    assert query("configs", "deepspeed_multi_gpu").stdout.split() == list(LESSONS[2].configs)
    bad = query("walkthrough", "dpo")
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr.startswith("error: unknown lesson 'dpo'\nusage: python -m workshop.lessons")


def test_run_workshop_and_common_sh_keep_no_lesson_list_of_their_own():
    """The map run_workshop.sh kept (lesson -> scripts) and the entry common.sh named are gone: both ask."""
    run_workshop = (REPO / "scripts" / "run_workshop.sh").read_text()
    assert "workshop.lessons walkthrough" in run_workshop
    for lesson in LESSONS:
        for script in lesson.scripts:
            assert script not in run_workshop, script
    common = (REPO / "slurm" / "common.sh").read_text()
    assert "workshop.lessons entry" in common
    assert not any(lesson.entry in common for lesson in LESSONS)


def test_the_report_engine_imports_no_lesson():
    """workshop/report/ is lesson-free: a fresh interpreter that imports all of it has loaded no lesson module
    and not the registry either (the lessons are a parameter of build_tables and load_runs)."""
    code = ("import sys, pkgutil, importlib, workshop.report as r\n"
            "for m in pkgutil.iter_modules(r.__path__): importlib.import_module('workshop.report.' + m.name)\n"
            "print(sorted(name for name in sys.modules if name.startswith('workshop.lessons')))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


def test_the_walk_through_runs_each_lessons_profile_and_weak_scaling_at_two_points():
    for lesson in LESSONS:
        for command in lesson.walkthrough_commands():
            assert command[command.index("--profile") + 1] == lesson.walkthrough_profile
    multi = {lesson.name: lesson for lesson in LESSONS}["deepspeed_multi_gpu"]
    weak = [run for run in multi.walkthrough if run[0] == "slurm/multi_gpu_weak_scaling.slurm"]
    assert weak == [("slurm/multi_gpu_weak_scaling.slurm", "--gpus", "1"),
                    ("slurm/multi_gpu_weak_scaling.slurm", "--gpus", "2")]
