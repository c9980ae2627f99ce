"""Finding and loading runs: run folders (see docs/DESIGN.md, "The run folder") and bare Trainer stdout files.

A run is a run folder (`logs/<run_id>/` with manifest.json, log_history.jsonl or loggers.json) or a bare `*.out`
(e.g. SLURM's `logs/<name>-<jobid>.out`) that no run folder already covers. Nothing here raises on bad logs: a
damaged file becomes a `Missing` marker on the run. Which lesson a run belongs to comes from its manifest, else
from its name matched against the lessons it is given (the registry's): this module imports no lesson.
"""

import errno
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from workshop.logparse import (Missing, describe_bad_lines, is_summary, read_log_history, read_loggers, read_manifest,
                               read_text, read_trainer_out)
from workshop.monitor_logs import read_gpu_csv, read_psrecord
from workshop.report.handout_logs import deepspeed_facts, no_log_beside, pair, sniff
from workshop.report.manifest_check import check_manifest
from workshop.report.same_ids import shared_job_ids, tell_apart

# Any one makes a folder a run folder; loggers.json alone: the training stopped before its manifest (a flag typo).
RUN_MARKERS = ("manifest.json", "log_history.jsonl", "loggers.json")


@dataclass
class Run:
    name: str
    path: Path
    lesson: str
    status: str
    manifest: object  # dict or Missing
    events: object  # list of Trainer log dicts, or Missing
    events_file: str  # which file the events came from
    gpu: object  # DataFrame or Missing
    cpu: object  # DataFrame or Missing
    stdout: str = ""  # Trainer stdout text, when the events came from it
    damage: dict = field(default_factory=dict)  # file name -> 'damaged (...)' marker for skipped lines
    notes: list = field(default_factory=list)  # run-level notes (skipped lines, fallbacks, guesses)
    facts: dict = field(default_factory=dict)  # what a bare .out told of itself (DeepSpeed's config_name, world_size)


# ---------------------------------------------------------------------------------------------- finding runs

def find_memory_logs(paths):
    """[(path, "gpu" | "cpu")]: the nvidia-smi CSVs and psrecord logs under `paths` outside run folders (the
    handout's scripts write them beside the job's .out), or given as arguments themselves."""
    found = {}
    for root in map(Path, paths):
        if root.is_file():
            candidates = [root]
        else:
            candidates = []
            for dirpath, dirnames, filenames in walk(root):
                if any(marker in filenames for marker in RUN_MARKERS):
                    dirnames.clear()
                    continue
                candidates += [Path(dirpath, f) for f in filenames if f.endswith(MEMORY_LOG_SUFFIXES)]
        for path in candidates:
            kind = sniff(path) if path.suffix != ".out" else None
            if kind:
                found[os.path.realpath(path)] = (path, kind)
    return sorted(found.values())


MEMORY_LOG_SUFFIXES = (".csv", ".txt", ".log")


_SKIPPED = set()


def skipped(path, why):
    """Say on stderr, once per process, that `path` is left out and why (the tables show the other runs)."""
    if path not in _SKIPPED:
        _SKIPPED.add(path)
        print(f"[fill_tables] skipped {path}: {why}", file=sys.stderr)


def walk(root):
    """os.walk over the folders this user may list and enter, naming each one it may not (os.walk passes over
    them without a word; in one it may list but not enter, every file would raise)."""
    why = "cannot read this folder ({}): any run in it is left out"

    def refused(err):  # a folder that is not there (yet: a notebook's empty classroom) holds no runs: no word
        if err.errno != errno.ENOENT:
            skipped(Path(err.filename), why.format(err.strerror))

    for dirpath, dirnames, filenames in os.walk(root, onerror=refused):
        if not os.access(dirpath, os.X_OK):
            skipped(Path(dirpath), why.format(os.strerror(errno.EACCES)))
            dirnames.clear()
            continue
        yield dirpath, dirnames, filenames


def find_runs(paths):
    """(run folders, bare .out files) under the given paths, each sorted; a .out named like a run folder
    (SLURM's <name>-<jobid>.out next to logs/<name>-<jobid>/) is left out, as are files inside run folders."""
    run_dirs, outs = set(), set()
    for root in map(Path, paths):
        if root.is_file():
            if root.suffix == ".out":
                outs.add(root)
            continue
        for dirpath, dirnames, filenames in walk(root):
            if any(marker in filenames for marker in RUN_MARKERS):
                run_dirs.add(Path(dirpath))
                dirnames.clear()  # checkpoints and the like live below a run folder
                continue
            outs.update(Path(dirpath, f) for f in filenames if f.endswith(".out"))
    # A run folder given by a parent and by itself would be listed twice, so compare real paths (os.path's
    # realpath, which unlike Path.resolve does not raise on a symlink loop).
    run_dirs = sorted({os.path.realpath(d): d for d in run_dirs}.values())
    covered = {d.name for d in run_dirs}
    for out in sorted(o for o in outs if not o.is_file()):
        skipped(out, "not a readable file (a broken link or a symlink loop)")
    outs = sorted(o for o in {os.path.realpath(o): o for o in outs if o.is_file()}.values()
                  if o.stem not in covered and not any((o.parent / m).is_file() for m in RUN_MARKERS))
    return run_dirs, outs


def guess_lesson(name, lessons):
    """The lesson a run name starts with (longest match); the lesson owning its config name (stage2_offload-123,
    as SLURM names its .out files); else the first lesson (the baseline)."""
    matches = [lesson.name for lesson in lessons if name.startswith(lesson.name)]
    if matches:
        return max(matches, key=len)
    config = name.split("-")[0]
    return next((lesson.name for lesson in lessons if config in lesson.configs), lessons[0].name)


def guess_status(events, text):
    """Status of a run without a manifest, from what its stdout shows."""
    if not isinstance(events, Missing) and any(is_summary(e) for e in events):
        return "completed"
    if "out of memory" in text.lower():
        return "oom"
    if "Traceback (most recent call last)" in text:
        return "failed"
    return "unknown"


def _take(run, result, filename):
    """Unwrap a reader's result, remembering skipped lines as damage on the run."""
    if isinstance(result, Missing):
        return result
    if result.bad_lines:
        marker = describe_bad_lines(filename, result.bad_lines)
        run.damage[filename] = marker
        run.notes.append(f"{run.name}: `{marker}` — those lines were skipped; values they held are missing")
    return result.data


def load_run_dir(path, lessons):
    manifest, problems = check_manifest(read_manifest(path))
    name = manifest.get("run_id") if isinstance(manifest, dict) else None
    name = name if isinstance(name, str) and name else path.name
    lesson = manifest.get("lesson") if isinstance(manifest, dict) else None
    if not isinstance(lesson, str) or lesson not in {known.name for known in lessons}:
        lesson = guess_lesson(name, lessons)
    run = Run(name=name, path=path, lesson=lesson, status="unknown",
              manifest=manifest, events=None, events_file="log_history.jsonl", gpu=None, cpu=None)
    if problems:
        run.notes.append(f"{run.name}: manifest.json: {'; '.join(problems)}: left out, as if not recorded")

    run.events = _take(run, read_log_history(path / "log_history.jsonl"), "log_history.jsonl")
    if isinstance(run.events, Missing) or not run.events:
        stdout = read_text(path / "train.out")
        if isinstance(stdout, str):
            events = _take(run, read_trainer_out(path / "train.out"), "train.out")
            if events:  # only fall back when train.out has something to offer
                run.notes.append(f"{run.name}: log_history.jsonl absent or empty; values read from train.out")
                run.events, run.events_file, run.stdout = events, "train.out", stdout

    run.gpu = _take(run, read_gpu_csv(path / "gpu_memory.csv"), "gpu_memory.csv")
    run.cpu = _take(run, read_psrecord(path / "cpu_memory.log"), "cpu_memory.log")
    status = manifest.get("status") if isinstance(manifest, dict) else None
    if isinstance(status, str) and status:
        run.status = end_status(run, status)
    elif (exit_status := training_exit_status(path)) not in (None, 0):
        run.status = f"failed (exit {exit_status}, no manifest)"
        run.notes.append(f"{run.name}: `{run.status}` — the training stopped before writing its manifest "
                         "(a mistyped flag, a missing file); train.out says why")
    else:
        run.status = guess_status(run.events, run.stdout)
        run.notes.append(f"{run.name}: no status in a manifest; `{run.status}` is guessed from the logs")
    return run


def training_exit_status(path):
    """The training's exit status from common.sh's loggers.json, or None."""
    training = read_loggers(path)
    return None if isinstance(training, Missing) else training.get("exit_status")


# Every status a run can have (the manifest's, and end_status's) -> how a cell it never logged reads. "early": it
# ended before its last values were logged. Matched with startswith, so "oom (host memory limit)" is "oom".
# A new status is one line here.
STATUSES = {
    "completed": "missing (not logged)",
    "running": "not yet (running)",  # first in absent(): a running run's last line is often half-written
    "failed": "early",
    "oom": "early",
    "cancelled": "early",
    "timeout": "early",
    "killed (no end record)": "early",
    "rank lost": "early",  # a rank or node died; the survivors gave up after --dist-timeout
    "diverged": "early",  # NaN/inf loss (or fp16 loss scale at its minimum) for --diverge-patience steps
    "disk full": "early",  # a checkpoint write failed for want of space
}
ENDED_EARLY = tuple(status for status, cell in STATUSES.items() if cell == "early")


def end_status(run, status):
    """The manifest's status, made precise where the manifest alone cannot know how the job ended.
    common.sh's end record (loggers.json) says whether the kernel's OOM killer or SLURM's time limit ended it."""
    training = read_loggers(run.path)
    ended = None if isinstance(training, Missing) else training.get("ended")
    if ended == "rank lost" and status in ("running", "cancelled", "failed"):  # common.sh saw a rank killed
        return "rank lost"
    if status == "running" and ended == "oom-killed":  # SIGKILL from the kernel: no chance to write the end
        limit = training.get("memory_limit_mb")
        run.notes.append(f"{run.name}: `oom (host memory limit)` — the kernel's OOM killer stopped the training: it "
                         f"needed more host memory than the job may use (--mem{f'={limit}M' if limit else ''}); "
                         "ask for more, or use less; values are what it logged until then")
        return "oom (host memory limit)"
    if status == "running" and (run.path / "loggers.json").is_file():
        # common.sh wrote its end record, so the training is gone, yet it never finished its manifest:
        # SIGKILL, the kernel's OOM killer, a node failure. Whatever it logged before still shows.
        run.notes.append(f"{run.name}: `killed (no end record)` — the training stopped without finishing its "
                         "manifest (SIGKILL, the OOM killer or a lost node); values are what it logged until then")
        return "killed (no end record)"
    if status == "cancelled":  # SIGTERM: scancel, or SLURM's time limit (the end record or the job's .out says which)
        job_out = read_text(run.path.with_name(run.path.name + ".out"))
        if ended == "time limit" or (isinstance(job_out, str) and "DUE TO TIME LIMIT" in job_out):
            return "timeout"
    return status


def load_bare_out(path, lessons, logs=None):
    """A SLURM .out without a run folder, with the memory logs paired with it ({"gpu": csv, "cpu": psrecord})."""
    text = read_text(path)
    stdout = text if isinstance(text, str) else ""
    facts = deepspeed_facts(stdout)
    run = Run(name=path.stem, path=path, lesson=lesson_of_out(path.stem, facts, lessons), status="unknown",
              manifest=None, events=None, events_file=path.name, stdout=stdout, gpu=None, cpu=None, facts=facts)
    run.manifest = Missing("n/a (bare .out)", f"{path.name} has no run folder, so no manifest")
    logs = logs or {}
    for kind, reader, what in (("gpu", read_gpu_csv, "nvidia-smi CSV"), ("cpu", read_psrecord, "psrecord log")):
        if kind in logs:
            setattr(run, kind, _take(run, reader(logs[kind]), logs[kind].name))
        else:
            setattr(run, kind, no_log_beside(path, kind, what))
    run.events = _take(run, read_trainer_out(path), path.name)
    run.status = guess_status(run.events, run.stdout)
    if facts:
        run.notes.append(f"{run.name}: classified as {facts['config_name']}"
                         f"{' on ' + str(facts['world_size']) + ' processes' if facts.get('world_size') else ''} "
                         "from the configuration DeepSpeed printed at start-up")
    return run


def lesson_of_out(name, facts, lessons):
    """A bare .out's lesson: its name's, unless DeepSpeed's start-up print names a config that lesson lacks; then
    the lesson with that config (and several processes when DeepSpeed ran several)."""
    lesson = guess_lesson(name, lessons)
    config = facts.get("config_name")
    owners = [known for known in lessons if config in known.configs]
    if not config or not owners or any(known.name == lesson for known in owners):
        return lesson
    several = facts.get("world_size", 1) > 1
    return next((known.name for known in owners if known.multi_process == several), owners[0].name)


def load_memory_log(path, kind, lessons):
    """A memory log nothing paired with: a run of its own (Objective 2 from an nvidia-smi CSV alone)."""
    name = path.stem
    alone = Missing("n/a (memory log only)", f"{path.name} came without a Trainer .out or run folder")
    run = Run(name=name, path=path, lesson=guess_lesson(name, lessons), status="unknown (memory log only)",
              manifest=alone, events=alone, events_file=path.name, gpu=alone, cpu=alone)
    setattr(run, kind, _take(run, (read_gpu_csv if kind == "gpu" else read_psrecord)(path), path.name))
    return run


def load_runs(paths, lessons):
    """Every run under `paths`; `lessons` (the registry's, workshop.lessons.LESSONS) decide a run's lesson."""
    run_dirs, outs = find_runs(paths)
    pairs, alone, notes = pair(outs, find_memory_logs(paths))
    runs = [load_run_dir(d, lessons) for d in run_dirs] + [load_bare_out(o, lessons, pairs[o]) for o in outs]
    runs += [load_memory_log(path, kind, lessons) for path, kind in alone]
    for run in runs:
        run.notes += [note for note in notes if note.startswith(run.name + ": ")]
    shared = shared_job_ids(outs)
    tell_apart(runs)
    for run in runs:
        run.notes += [f"{run.name}: {shared[run.path]}"] if run.path in shared else []
    return runs


