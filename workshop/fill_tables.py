"""Fill the exercise tables from whatever logs exist.

    python -m workshop.fill_tables logs/ [more dirs or .out files] [--format markdown|csv|json]

A run is a run folder (`logs/<run_id>/` with manifest.json or log_history.jsonl, see docs/DESIGN.md) or a bare
Trainer stdout file (`*.out`, e.g. SLURM's `logs/<name>-<jobid>.out`) that no run folder already covers.
Each lesson registers its tables with @table; a run lands in the tables of its manifest's `lesson` (for a bare
.out, guessed from the name prefix). A cell the logs cannot fill holds a short marker such as `n/a (no GPU)`,
explained in the notes under its table. Nothing here raises on bad logs: a damaged file is a marker, not a crash.

Lesson 2's tables compare runs: one row per (model and data, config) from its latest completed run, and quiz
answers computed from those rows, printed under the table.

Notebooks call `build_tables(paths)`: {key: DataFrame}, with df.attrs["title"], df.attrs["notes"] and
df.attrs["answers"].
"""

import argparse
import functools
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from workshop.logparse import (
    Missing,
    final_summary,
    is_summary,
    describe_bad_lines,
    read_gpu_csv,
    read_log_history,
    read_manifest,
    read_psrecord,
    read_text,
    read_trainer_out,
)

LESSONS = ("baseline", "deepspeed_single_gpu", "deepspeed_multi_gpu", "make_it_fast")
# Any one makes a folder a run folder; loggers.json alone: the training stopped before its manifest (a flag typo).
RUN_MARKERS = ("manifest.json", "log_history.jsonl", "loggers.json")
# Lesson 2's configs (deepspeed_single_gpu/configs/<name>.json), in the order the lesson walks through them.
ZERO_CONFIGS = ("stage0", "stage1", "stage1_offload", "stage2", "stage2_offload", "stage2_offload_nopin",
                "stage3", "stage3_offload", "stage3_offload_nopin")


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


# ---------------------------------------------------------------------------------------------- finding runs

def find_runs(paths):
    """(run folders, bare .out files) under the given paths, each sorted; a .out named like a run folder
    (SLURM's <name>-<jobid>.out next to logs/<name>-<jobid>/) is left out, as are files inside run folders."""
    run_dirs, outs = set(), set()
    for root in map(Path, paths):
        if root.is_file():
            if root.suffix == ".out":
                outs.add(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            if any(marker in filenames for marker in RUN_MARKERS):
                run_dirs.add(Path(dirpath))
                dirnames.clear()  # checkpoints and the like live below a run folder
                continue
            outs.update(Path(dirpath, f) for f in filenames if f.endswith(".out"))
    # A run folder given by a parent and by itself would be listed twice, so compare resolved paths.
    run_dirs = sorted({d.resolve(): d for d in run_dirs}.values())
    covered = {d.name for d in run_dirs}
    outs = sorted(o for o in {o.resolve(): o for o in outs}.values()
                  if o.stem not in covered and not any((o.parent / m).is_file() for m in RUN_MARKERS))
    return run_dirs, outs


def guess_lesson(name):
    """The lesson a run name starts with (longest match); a lesson-2 config name (stage2_offload-123, as SLURM
    names its .out files); else baseline."""
    matches = [lesson for lesson in LESSONS if name.startswith(lesson)]
    if matches:
        return max(matches, key=len)
    return "deepspeed_single_gpu" if name.split("-")[0] in ZERO_CONFIGS else "baseline"


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


def load_run_dir(path):
    manifest = read_manifest(path)
    name = manifest.get("run_id") if isinstance(manifest, dict) else None
    name = name if isinstance(name, str) and name else path.name
    lesson = manifest.get("lesson") if isinstance(manifest, dict) else None
    run = Run(name=name, path=path, lesson=lesson if lesson in LESSONS else guess_lesson(name), status="unknown",
              manifest=manifest, events=None, events_file="log_history.jsonl", gpu=None, cpu=None)

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
    try:
        return json.loads((path / "loggers.json").read_text())["training"]["exit_status"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


# Statuses of a run that ended before its last values were logged (the manifest's, and end_status's).
# Matched with startswith, so "oom (host memory limit)" counts as "oom".
ENDED_EARLY = ("failed", "oom", "cancelled", "timeout", "killed (no end record)", "rank lost", "diverged", "disk full")


def end_status(run, status):
    """The manifest's status, made precise where the manifest alone cannot know how the job ended.
    common.sh's end record (loggers.json) says whether the kernel's OOM killer or SLURM's time limit ended it."""
    try:
        training = json.loads((run.path / "loggers.json").read_text())["training"]
        ended = training.get("ended") if isinstance(training, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        training, ended = None, None
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


def load_bare_out(path):
    text = read_text(path)
    run = Run(name=path.stem, path=path, lesson=guess_lesson(path.stem), status="unknown",
              manifest=None, events=None, events_file=path.name, stdout=text if isinstance(text, str) else "",
              gpu=None, cpu=None)
    run.manifest = run.gpu = run.cpu = Missing(
        "n/a (bare .out)", f"{path.name} has no run folder: no manifest, gpu_memory.csv or cpu_memory.log")
    run.events = _take(run, read_trainer_out(path), path.name)
    run.status = guess_status(run.events, run.stdout)
    return run


def load_runs(paths):
    run_dirs, outs = find_runs(paths)
    return [load_run_dir(d) for d in run_dirs] + [load_bare_out(o) for o in outs]


# ---------------------------------------------------------------------------------------------- cell helpers

def absent(run, what, source=None):
    """The marker for a value the logs do not (yet) hold, saying why as precisely as the run allows.
    Details name no column, so one note covers every cell of a run with the same marker."""
    source = source or run.events_file
    if run.status == "running":  # first: a running run's last line is often half-written
        return Missing("not yet (running)", "still running: values appear as it logs them")
    if source in run.damage:
        return Missing(run.damage[source])  # the run's own note explains it
    if run.status.startswith(ENDED_EARLY):
        return Missing(f"missing (run {run.status})", f"the run ended `{run.status}` before logging these values")
    return Missing("missing (not logged)", f"{source} does not hold these values")


def number_or(value, fallback):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return fallback


def manifest_value(run, *keys, what):
    """manifest[k1][k2]..., or the marker saying why not."""
    value = run.manifest
    if isinstance(value, Missing):
        return value
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return number_or(value, None) if value is not None else absent(run, what, "manifest.json")


def gpu_stat(run, stat="max"):
    """nvidia-smi memory.used `stat` (max, mean, min) of the busiest GPU: with several GPUs it sets the limit."""
    if isinstance(run.gpu, Missing):
        return run.gpu
    value = run.gpu.groupby("index")["memory_used_mib"].agg(stat).max()
    return float(value) if pd.notna(value) else \
        Missing("n/a (memory.used [N/A])", "nvidia-smi reported no memory.used values")


def torch_reserved(run):
    """The manifest's torch.cuda.max_memory_reserved in MiB; `n/a (no GPU)` for a run on the CPU."""
    reserved = manifest_value(run, "peak_memory", "cuda_max_reserved_mib", what="peak_memory.cuda_max_reserved_mib")
    device = run.manifest.get("peak_memory") if isinstance(run.manifest, dict) else None
    device = device.get("device") if isinstance(device, dict) else None
    if isinstance(reserved, Missing) and isinstance(device, str) and not device.startswith("cuda"):
        return Missing("n/a (no GPU)", f"the run used device {device}: no CUDA memory to report")
    return reserved


def cpu_peak(run):
    """psrecord's largest Real (MB) sample: host RSS of the training and its children, MiB."""
    return run.cpu if isinstance(run.cpu, Missing) else float(run.cpu["real_mib"].max())


def epoch_label(epoch, position):
    """Evals are labelled by epoch, rounding up within 0.1 (a last eval at 2.93 is epoch 3); an eval without a
    usable epoch is labelled by its position."""
    if not isinstance(epoch, float) or not math.isfinite(epoch):
        return position
    up = math.ceil(epoch - 1e-9)
    return up if up - epoch <= 0.1 + 1e-9 else round(epoch, 2)


def expected_epochs(run):
    settings = run.manifest.get("settings") if isinstance(run.manifest, dict) else None
    planned = settings.get("num_train_epochs") if isinstance(settings, dict) else None
    if isinstance(planned, (int, float)) and 0 < planned <= 100:
        return math.ceil(planned)
    return 3  # the lesson's default; evals at other epochs still get their own columns


_TRAIN_BAR = re.compile(r"^\s*\d+%\|[^|]*\|\s*\d+/(\d+) \[")  # tqdm's bar with no description: the train loop


def steps_per_epoch(run, summary):
    from_manifest = run.manifest.get("steps_per_epoch") if isinstance(run.manifest, dict) else None
    if isinstance(from_manifest, (int, float)) and not isinstance(from_manifest, bool):
        return from_manifest
    if isinstance(run.events, Missing):
        return run.events
    # log_history events carry the global step: steps per epoch = step / epoch at the furthest event.
    stepped = [e for e in run.events if isinstance(e.get("step"), float) and isinstance(e.get("epoch"), float)
               and math.isfinite(e["step"]) and math.isfinite(e["epoch"]) and e["epoch"] > 0]
    if stepped:
        last = max(stepped, key=lambda e: e["step"])
        return round(last["step"] / last["epoch"])
    # Stdout has no steps; the training progress bar's total over the final epoch count does.
    final_epoch = summary.get("epoch") if summary else None
    if run.stdout and isinstance(final_epoch, float) and math.isfinite(final_epoch) and final_epoch > 0:
        for segment in re.split(r"[\r\n]", run.stdout):
            bar = _TRAIN_BAR.match(segment)
            if bar:
                return round(int(bar.group(1)) / final_epoch)
    return absent(run, "step counts")


# ---------------------------------------------------------------------------------------------- tables

TABLES = {}  # lesson -> {key: (title, row function)}


def table(lesson, key, title, each_run=True):
    """Register a table of `lesson`. With each_run, `row(run) -> dict` makes one row per run of the lesson.
    Otherwise `build(runs) -> (rows, answers, notes)` gets all the lesson's runs at once, for tables that pick
    runs and compare them; `answers` are sentences computed from the rows, shown under the table."""
    def register(make):
        make.each_run = each_run
        TABLES.setdefault(lesson, {})[key] = (title, make)
        return make
    return register


@table("baseline", "baseline_objective_1", "Baseline, objective 1: loss and throughput")
def objective_1(run):
    row = {"run": run.name, "status": run.status}
    events = run.events
    if isinstance(events, Missing):
        for column in ["train loss (last logged)", "train_loss (run mean)", "eval loss (epoch 1)",
                       "train samples/s", "eval samples/s (last eval)", "steps/epoch"]:
            row[column] = events
        return {**row, **answer_scores(run)}
    losses = [e for e in events if "loss" in e]
    evals = [e for e in events if "eval_loss" in e]
    summary = final_summary(events)

    row["train loss (last logged)"] = losses[-1]["loss"] if losses else absent(run, "training loss")
    row["train_loss (run mean)"] = summary.get("train_loss", absent(run, "train_loss")) if summary \
        else absent(run, "final train summary")
    by_label = {epoch_label(e.get("epoch"), i + 1): e["eval_loss"] for i, e in enumerate(evals)}
    for label in range(1, expected_epochs(run) + 1):
        by_label.setdefault(label, None)
    for label in sorted(by_label, key=float):
        value = by_label[label]
        row[f"eval loss (epoch {label})"] = value if value is not None else absent(run, f"eval at epoch {label}")
    row["train samples/s"] = summary.get("train_samples_per_second", absent(run, "train samples/s")) if summary \
        else absent(run, "final train summary")
    row["eval samples/s (last eval)"] = evals[-1].get("eval_samples_per_second", absent(run, "eval samples/s")) \
        if evals else absent(run, "eval")
    row["steps/epoch"] = steps_per_epoch(run, summary)
    return {**row, **answer_scores(run)}


def answer_scores(run):
    """{"EM": %, "F1": %} of the fine-tuned model, from answer_quality.json (python -m workshop.answer_quality)."""
    if not run.path.is_dir():
        return {"EM": run.manifest, "F1": run.manifest}  # a bare .out: its marker says there is no run folder
    text = read_text(run.path / "answer_quality.json")
    if isinstance(text, Missing):
        missing = Missing("n/a (not scored)",
                          f"score its answers with `python -m workshop.answer_quality --run-dir {run.path}`")
        return {"EM": missing, "F1": missing}
    damaged = Missing("damaged (answer_quality.json)", f"{run.path / 'answer_quality.json'} has no after scores")
    try:
        after = json.loads(text)["after"]
        return {"EM": number_or(after["exact_match"], damaged), "F1": number_or(after["f1"], damaged)}
    except (ValueError, KeyError, TypeError):
        return {"EM": damaged, "F1": damaged}


@table("baseline", "baseline_objective_2", "Baseline, objective 2: memory")
def objective_2(run):
    row = {"run": run.name, "status": run.status}
    gpu = run.gpu
    if isinstance(gpu, Missing):
        row["GPUs"] = row["GPU MiB peak"] = row["GPU MiB mean"] = row["GPU MiB min"] = gpu
    else:
        names = gpu.groupby("index")["name"].first()
        row["GPUs"] = f"{len(names)} x {names.iloc[0]}" if names.nunique() == 1 else ", ".join(map(str, names))
        for column, stat in [("GPU MiB peak", "max"), ("GPU MiB mean", "mean"), ("GPU MiB min", "min")]:
            row[column] = gpu_stat(run, stat)
    row["torch max reserved MiB"] = torch_reserved(run)
    row["host RSS MiB peak (psrecord)"] = cpu_peak(run)
    row["host RSS MiB peak (manifest)"] = manifest_value(run, "peak_memory", "host_peak_rss_mib",
                                                         what="peak_memory.host_peak_rss_mib")
    return row


# ---------------------------------------------------------------------------------------------- lesson 2 tables
# These compare runs, so they see all the lesson's runs at once: one row per (model and data, config), from the
# latest completed run of it, and quiz answers computed from those rows.

def _manifest(run):
    return run.manifest if isinstance(run.manifest, dict) else {}


def config_of(run):
    """The DeepSpeed config a run used: the manifest's config_name, else its run id's prefix (stage2-123)."""
    name = _manifest(run).get("config_name")
    return name if isinstance(name, str) and name else run.name.split("-")[0]


def setup_of(run):
    """(model, init, subset size): runs are only compared with runs of the same model and data."""
    manifest = _manifest(run)
    return tuple(str(manifest.get(key, "unknown")) for key in ("model", "init", "subset_size"))


def setup_label(setup):
    model, init, subset = setup
    return f"{model} ({init}, {subset} samples)"


def latest_runs(runs):
    """(chosen runs, notes): per (model, init, subset, config) the latest completed run, or the latest run of
    any status when none completed (so a failed or running one still shows); a note says what was ignored."""
    groups = {}
    for run in runs:
        groups.setdefault((*setup_of(run), config_of(run)), []).append(run)
    chosen, notes = [], []
    for (*setup, config), group in groups.items():
        group.sort(key=lambda run: (str(_manifest(run).get("start_time") or ""), run.name))
        completed = [run for run in group if run.status == "completed"]
        pick = (completed or group)[-1]
        chosen.append(pick)
        if len(group) > 1:
            which = "latest completed" if completed else "latest (none completed)"
            ignored = ", ".join(run.name for run in group if run is not pick)
            notes.append(f"{pick.name}: the {which} of {len(group)} {config} runs of {setup_label(setup)}; "
                         f"{len(group) - 1} ignored ({ignored})")
    order = {name: i for i, name in enumerate(ZERO_CONFIGS)}
    chosen.sort(key=lambda run: (setup_of(run), order.get(config_of(run), len(order)), config_of(run)))
    return chosen, notes


def train_runtime(run):
    """The Trainer's train_runtime (s) from its final summary event."""
    if isinstance(run.events, Missing):
        return run.events
    summary = final_summary(run.events)
    value = number_or(summary.get("train_runtime") if summary else None, None)
    return value if value is not None else absent(run, "the final train summary")


def zero_row(run):
    """What both lesson-2 tables measure for one run."""
    model, init, subset = setup_of(run)
    return {"model": model, "init": init, "subset": subset, "config": config_of(run), "run": run.name,
            "status": run.status,
            "peak GPU MiB (nvidia-smi)": gpu_stat(run, "max"),
            "torch max reserved MiB": torch_reserved(run),
            "peak CPU MiB (psrecord)": cpu_peak(run),
            "total runtime s (train_runtime)": train_runtime(run),
            "wall s (manifest)": manifest_value(run, "wall_seconds", what="wall_seconds")}


def is_number(value):
    return isinstance(value, float) and math.isfinite(value)


def change(new, old):
    """'3.2 s longer (+12.6%)': how `new` seconds compare with `old`."""
    word = "longer" if new >= old else "shorter"
    percent = f" ({(new - old) / old * 100:+.1f}%)" if old else ""
    return f"{abs(new - old):.1f} s {word}{percent}"


def _lesson_runs(runs):
    """Lesson-2 runs proper: a DeepSpeed config by name or in the manifest (not a baseline filed here by hand)."""
    return [run for run in runs if config_of(run) in ZERO_CONFIGS or _manifest(run).get("deepspeed_config")]


PIN, NOPIN = "stage2_offload", "stage2_offload_nopin"


@table("deepspeed_single_gpu", "deepspeed_single_gpu_part1", "Part 1: ZeRO 2 + offload, pin_memory true vs false",
       each_run=False)
def part1(runs):
    chosen, notes = latest_runs([run for run in runs if config_of(run) in (PIN, NOPIN)])
    rows = [zero_row(run) for run in chosen]
    notes += [note for run in chosen for note in run.notes]
    answers = []
    runtime = "total runtime s (train_runtime)"
    for setup in dict.fromkeys(setup_of(run) for run in chosen):
        by_config = {row["config"]: row for row in rows if (row["model"], row["init"], row["subset"]) == setup}
        pin, nopin = by_config.get(PIN, {}).get(runtime), by_config.get(NOPIN, {}).get(runtime)
        if is_number(pin) and is_number(nopin):
            answers.append(f"{setup_label(setup)}: without pinned memory ({NOPIN}) training took "
                           f"{change(nopin, pin)} than with pinned ({PIN}): {nopin:.1f} s vs {pin:.1f} s.")
        else:
            lacking = [c for c, value in ((PIN, pin), (NOPIN, nopin)) if not is_number(value)]
            answers.append(f"{setup_label(setup)}: no runtime comparison yet: no train_runtime for "
                           f"{' and '.join(lacking)} (run `bash slurm/<config>.slurm` to completion).")
    return rows, answers, notes


@functools.lru_cache(maxsize=None)
def _estimates(model):
    from workshop.estimate import cached_estimate_table  # DeepSpeed's estimators, kept on disk after the first use

    return cached_estimate_table(model, [1])


def model_state_estimate(run):
    """DeepSpeed's estimate of model-state memory on the one GPU (MiB) for this run's model and config."""
    model = str(_manifest(run).get("model", "")).split("/")[-1]  # bigscience/bloom-560m -> bloom-560m
    config = config_of(run)
    try:
        estimates = _estimates(model)
    except ValueError:  # estimate_table knows the BLOOM sizes only
        return Missing(f"n/a (no estimate for {model or 'unknown model'})", "workshop.estimate knows BLOOM models only")
    # workshop.train loads the model before the Trainer sets up DeepSpeed, so ZeRO-3 starts from a whole model
    # (the estimate without zero.Init); stages 0-2 have no such choice ("").
    found = estimates[estimates["configs"].str.split(", ").map(lambda names: config in names)
                      & (estimates["zero_init"] != "yes")]
    if found.empty:
        return Missing(f"n/a (no estimate for {config})", "workshop.estimate covers the lesson's configs only")
    return float(found["gpu_gib_per_gpu"].iloc[0] * 1024)


@table("deepspeed_single_gpu", "deepspeed_single_gpu_part2", "Part 2: every configuration", each_run=False)
def part2(runs):
    chosen, notes = latest_runs(_lesson_runs(runs))
    notes += [note for run in chosen for note in run.notes]
    rows = []
    for run in chosen:
        row = zero_row(run)
        estimate = row["DeepSpeed estimate MiB (model states)"] = model_state_estimate(run)
        reserved = row["torch max reserved MiB"]
        row["remainder MiB (reserved - estimate)"] = reserved - estimate if is_number(reserved) and \
            is_number(estimate) else (reserved if isinstance(reserved, Missing) else estimate)
        rows.append(row)
    return rows, lowest_peak_answers(rows) + offload_answers(rows), notes


def _by_setup(rows):
    setups = {}
    for row in rows:
        setups.setdefault((row["model"], row["init"], row["subset"]), []).append(row)
    return setups


def lowest_peak_answers(rows, gpu_column="peak GPU MiB (nvidia-smi)"):
    """Per model and data, the configuration with the lowest GPU peak; host RSS when no GPU was measured."""
    answers = []
    for setup, group in _by_setup(rows).items():
        column, what = gpu_column, "GPU memory (nvidia-smi)"
        if not any(is_number(row[column]) for row in group):
            column, what = "peak CPU MiB (psrecord)", "host RSS (psrecord), as no GPU was measured"
        measured = sorted((row[column], row["config"]) for row in group if is_number(row[column]))
        if not measured:
            answers.append(f"{setup_label(setup)}: no peak memory measured yet.")
            continue
        (low, low_config), (high, high_config) = measured[0], measured[-1]
        answers.append(f"{setup_label(setup)}: lowest peak {what}: {low_config} at {low:.0f} MiB"
                       + (f" (highest: {high_config} at {high:.0f} MiB)." if len(measured) > 1 else
                          "; the only configuration measured so far."))
    return answers


def offload_answers(rows):
    """Per model and data and stage, how much longer each offload config took than the same stage without."""
    answers, runtime = [], "total runtime s (train_runtime)"
    for setup, group in _by_setup(rows).items():
        by_config = {row["config"]: row[runtime] for row in group}
        for config, seconds in by_config.items():
            base = config.split("_offload")[0]
            if base == config or not is_number(seconds):
                continue
            if is_number(by_config.get(base)):
                answers.append(f"{setup_label(setup)}: {config} took {change(seconds, by_config[base])} "
                               f"than {base}: {seconds:.1f} s vs {by_config[base]:.1f} s.")
            else:
                answers.append(f"{setup_label(setup)}: {config} has no {base} run with a runtime to compare with.")
    return answers


# ---------------------------------------------------------------------------------------------- lesson 3 tables
# Two experiments share the lesson: weak scaling (the same samples per GPU on more GPUs; slurm/
# multi_gpu_weak_scaling.slurm) and ZeRO on 2 GPUs (stages 1-3 with and without offload; slurm/multi_gpu_zero.slurm).
# Both tables measure the same things per run, lesson 2's columns plus the Trainer's throughput and losses.

ZERO_2GPU = ("stage1", "stage1_offload", "stage2", "stage2_offload", "stage3", "stage3_offload")
PEAK_PER_GPU, MEAN_PER_GPU = "peak GPU MiB per GPU (nvidia-smi)", "mean GPU MiB per GPU (nvidia-smi)"
RUNTIME, HOST_PEAK = "total runtime s (train_runtime)", "peak CPU MiB (psrecord)"


def world_of(run):
    value = _manifest(run).get("world_size")
    return value if isinstance(value, int) and value > 0 else 1


def is_zero_2gpu(run):
    """A run of the 2-GPU ZeRO comparison: one of its six configs on 2 processes, not part of a weak-scaling sweep."""
    return config_of(run) in ZERO_2GPU and world_of(run) == 2 and not run.name.startswith("weak_scaling")


def gpu_mean_per_gpu(run):
    """nvidia-smi memory.used averaged over each GPU's samples, then over the GPUs (every GPU's rows count)."""
    if isinstance(run.gpu, Missing):
        return run.gpu
    value = run.gpu.groupby("index")["memory_used_mib"].mean().mean()
    return float(value) if pd.notna(value) else \
        Missing("n/a (memory.used [N/A])", "nvidia-smi reported no memory.used values")


def summary_value(run, summary, key, what):
    return number_or(summary.get(key) if summary else None, absent(run, what))


def multi_gpu_row(run):
    """The ten measurements of a lesson-3 run (the weak-scaling and the 2-GPU ZeRO tables share them)."""
    lesson2 = zero_row(run)
    world, subset = world_of(run), _manifest(run).get("subset_size")
    events = [] if isinstance(run.events, Missing) else run.events
    summary = final_summary(events)
    evals = [e for e in events if "eval_loss" in e]
    last_eval = evals[-1] if evals else None
    row = {key: lesson2[key] for key in ("model", "init", "subset", "config", "run", "status")}
    row["GPUs (processes)"] = world
    row["nodes"] = _manifest(run).get("nodes") or 1  # older manifests have no count: one node
    row["samples per GPU"] = subset // world if isinstance(subset, int) else absent(run, "subset_size", "manifest.json")
    row[RUNTIME] = lesson2[RUNTIME]
    row["train samples/s"] = summary_value(run, summary, "train_samples_per_second", "train samples/s")
    row["train steps/s"] = summary_value(run, summary, "train_steps_per_second", "train steps/s")
    row["train_loss (run mean)"] = summary_value(run, summary, "train_loss", "train_loss")
    row["eval loss (last eval)"] = summary_value(run, last_eval, "eval_loss", "eval loss")
    row["eval samples/s (last eval)"] = summary_value(run, last_eval, "eval_samples_per_second", "eval samples/s")
    row[PEAK_PER_GPU] = lesson2["peak GPU MiB (nvidia-smi)"]  # the busiest GPU's peak: it sets the limit
    row[MEAN_PER_GPU] = gpu_mean_per_gpu(run)
    row["torch max reserved MiB"] = lesson2["torch max reserved MiB"]
    row[HOST_PEAK] = lesson2[HOST_PEAK]
    row["wall s (manifest)"] = lesson2["wall s (manifest)"]
    return row


MEMORY_NOTE = (f"`{PEAK_PER_GPU}`: the largest memory.used of the busiest GPU (it sets the limit); "
               f"`{MEAN_PER_GPU}`: each GPU's samples averaged, then the GPUs averaged. "
               f"`{HOST_PEAK}` is the whole node: every rank's process together.")


def percent_spread(values):
    return (max(values) - min(values)) / min(values) * 100


@table("deepspeed_multi_gpu", "deepspeed_multi_gpu_weak_scaling", "Weak scaling: same samples per GPU, more GPUs",
       each_run=False)
def weak_scaling(runs):
    chosen, notes = latest_runs([run for run in runs if not is_zero_2gpu(run)])
    notes += [note for run in chosen for note in run.notes] + [MEMORY_NOTE]
    rows = sorted((multi_gpu_row(run) for run in chosen),
                  key=lambda r: (r["model"], r["init"], str(r["samples per GPU"]), r["config"], r["nodes"],
                                 r["GPUs (processes)"]))
    answers = []
    groups = {}
    for row in rows:
        groups.setdefault((row["model"], row["init"], str(row["samples per GPU"]), row["config"]), []).append(row)
    for (model, init, per_gpu, config), group in groups.items():
        label = f"{model} ({init}, {per_gpu} samples per GPU, {config})"
        measured = [row for row in group if is_number(row[RUNTIME])]
        base = measured[0] if measured else None
        for row in group:
            row["efficiency (fewest-GPU runtime / runtime)"] = round(base[RUNTIME] / row[RUNTIME], 3) \
                if base and row in measured else Missing("n/a (no runtime)", "a run without train_runtime has no efficiency")
        if len(measured) > 1:
            last = measured[-1]
            answers.append(f"{label}: {base['GPUs (processes)']} -> {last['GPUs (processes)']} GPUs took "
                           f"{change(last[RUNTIME], base[RUNTIME])}; efficiency {base[RUNTIME] / last[RUNTIME]:.2f}.")
        answers.append(constant_memory_answer(label, group))
    return rows, answers, notes


def constant_memory_answer(label, group):
    """The quiz: is peak memory per GPU constant as GPUs are added? Within 5% across the GPU counts counts as yes.
    Without GPU numbers, host RSS per process (psrecord's node total / processes) stands in, and says so."""
    column, what = PEAK_PER_GPU, "peak GPU memory per GPU (nvidia-smi)"
    if sum(is_number(row[column]) for row in group) < 2:
        column, what = HOST_PEAK, "host RSS per process (psrecord / processes), as no GPU was measured"
    points = sorted((row["GPUs (processes)"], row[column] / (1 if column == PEAK_PER_GPU else row["GPUs (processes)"]))
                    for row in group if is_number(row[column]))
    if len({gpus for gpus, _ in points}) < 2:
        return (f"{label}: is peak memory per GPU constant as GPUs are added? not answerable yet: measured at "
                f"{', '.join(str(g) for g, _ in points) or 'no'} GPU count(s); run at least two "
                "(bash slurm/submit_weak_scaling.sh).")
    values = [mib for _, mib in points]
    spread = percent_spread(values)
    shown = ", ".join(f"{mib:.0f} MiB at {gpus}" for gpus, mib in points)
    verdict = "yes, about constant" if spread <= 5 else \
        ("no, it grows" if values[-1] > values[0] else "no, it shrinks")
    return f"{label}: is {what} constant as GPUs are added? {verdict} ({shown}; spread {spread:.1f}% of the smallest, 5% counts as constant)."


def zero_2gpu_runs(runs):
    chosen, notes = latest_runs([run for run in runs if is_zero_2gpu(run)])
    order = {name: i for i, name in enumerate(ZERO_2GPU)}
    chosen.sort(key=lambda run: (setup_of(run), order[config_of(run)]))
    return chosen, notes + [note for run in chosen for note in run.notes]


@table("deepspeed_multi_gpu", "deepspeed_multi_gpu_zero_2gpu", "ZeRO on 2 GPUs: stages 1-3, with and without offload",
       each_run=False)
def zero_2gpu(runs):
    chosen, notes = zero_2gpu_runs(runs)
    rows = [multi_gpu_row(run) for run in chosen]
    missing = [config for config in ZERO_2GPU if config not in {row["config"] for row in rows}]
    if rows and missing:
        notes.append(f"no run yet of {', '.join(missing)}: `CONFIGS=\"{' '.join(missing)}\" "
                     "bash slurm/submit_zero_2gpu.sh` submits them")
    return rows, lowest_peak_answers(rows, PEAK_PER_GPU), notes + [MEMORY_NOTE]


SAVING = "GPU memory saving % (peak per GPU)"
SLOWER = "runtime change % (train_runtime)"
HOST_CHANGE = "host RSS change % (psrecord)"


@table("deepspeed_multi_gpu", "deepspeed_multi_gpu_zero_savings", "ZeRO on 2 GPUs: what offloading saves and costs",
       each_run=False)
def zero_savings(runs):
    """Per model and data and stage: offload against the same stage without, from the 2-GPU ZeRO table's runs."""
    chosen, notes = zero_2gpu_runs(runs)
    rows = []
    for setup, group in _by_setup([multi_gpu_row(run) for run in chosen]).items():
        by_config = {row["config"]: row for row in group}
        for stage in ("stage1", "stage2", "stage3"):
            plain, offload = by_config.get(stage), by_config.get(f"{stage}_offload")
            if plain is None and offload is None:
                continue
            row = dict(zip(("model", "init", "subset"), setup), stage=stage,
                       run=" vs ".join(r["run"] for r in (plain, offload) if r))  # names the run(s) in the notes
            row[SAVING] = relative(plain, offload, PEAK_PER_GPU, stage, saving=True)
            row[SLOWER] = relative(plain, offload, RUNTIME, stage)
            row[HOST_CHANGE] = relative(plain, offload, HOST_PEAK, stage)
            rows.append(row)
    notes += [f"`{SAVING}` = (no-offload - offload) / no-offload x 100 of `{PEAK_PER_GPU}`: positive means "
              "offloading freed GPU memory.",
              f"`{SLOWER}` = (offload - no-offload) / no-offload x 100 of `{RUNTIME}`: positive means offloading "
              "made the training slower.",
              f"`{HOST_CHANGE}` = (offload - no-offload) / no-offload x 100 of `{HOST_PEAK}`: where the offloaded "
              "states went."]
    return rows, [], notes


def relative(plain, offload, column, stage, saving=False):
    """The percentage of the savings table, or the marker saying which run or value is missing."""
    for config, row in ((stage, plain), (f"{stage}_offload", offload)):
        if row is None:
            return Missing(f"n/a (no {config} run)", "the comparison needs both runs of the stage")
        if not is_number(row[column]):
            return Missing(f"n/a ({config}: {row[column]})", "the comparison needs a number from both runs; "
                           "the ZeRO table's notes say why one is missing")
    before, after = plain[column], offload[column]
    if not before:
        return Missing("n/a (zero baseline)", "a no-offload value of 0 gives no percentage")
    return round(((before - after) if saving else (after - before)) / before * 100, 1)


# ------------------------------------------------------------------------------------- make it fast

def changes_of(run):
    """The make-it-fast flags a run used, from its manifest's settings ("seed" when none)."""
    settings = _manifest(run).get("settings", {})
    changes = []
    if settings.get("padding", "max") != "max":
        changes.append(f"padding {settings['padding']}")
    batch, accumulation = settings.get("per_device_train_batch_size"), settings.get("gradient_accumulation_steps")
    if (batch, accumulation) != (4, 4) and batch:
        changes.append(f"micro-batch {batch} x {accumulation}")
    changes += [name for name, on in (("bf16", settings.get("bf16")), ("fused loss", settings.get("fused_loss")),
                                      ("torch.compile", settings.get("torch_compile"))) if on]
    if settings.get("optim"):
        changes.append(settings["optim"])
    return ", ".join(changes) or "seed"


@table("make_it_fast", "make_it_fast", "Make it fast: speed of the steady training steps (workshop/speed.py)")
def make_it_fast(run):
    speed = _manifest(run).get("speed") or {}
    row = {"run": run.name, "status": run.status, "changes": changes_of(run)}
    if not speed:
        why = absent(run, "speed figures", source="manifest.json")
    elif "why_no_rates" in speed:
        why = Missing("n/a (too few steps)", speed["why_no_rates"])
    else:
        why = None
    for column, key, scale in (("real tokens/s", "real_tokens_per_s", 1), ("MFU %", "mfu", 100),
                               ("s/step", "step_s", 1), ("start-up s", "startup_s", 1)):
        value = number_or(speed.get(key), None)
        if value is not None:
            row[column] = value * scale
        elif key == "mfu" and why is None:  # rates were measured, so only the GPU's peak was missing
            row[column] = Missing("n/a (no GPU)", "MFU needs a CUDA GPU whose peak workshop/speed.py knows")
        else:
            row[column] = why
    evals = [] if isinstance(run.events, Missing) else [e for e in run.events if "eval_loss" in e]
    row["final eval loss"] = evals[-1]["eval_loss"] if evals else absent(run, "eval loss")
    row["peak GPU MiB (nvidia-smi)"] = gpu_stat(run, "max")
    row["torch max reserved MiB"] = torch_reserved(run)
    return row


def build_tables(paths, lesson=None):
    """{key: DataFrame} for every table that has at least one run; markers are strings in the cells.
    df.attrs["title"] is the table's title, df.attrs["notes"] the lines that explain its markers,
    df.attrs["answers"] the quiz answers computed from its rows (empty for most tables).
    `lesson` files every run under that lesson (benchmarks/bench.py's runs are baseline runs by their manifest)."""
    runs = load_runs(paths)
    for run in runs if lesson else ():
        run.lesson = lesson
    tables = {}
    for lesson, lesson_tables in TABLES.items():
        members = [run for run in runs if run.lesson == lesson]
        for key, (title, make) in lesson_tables.items():
            if make.each_run:
                rows, answers, notes = [make(run) for run in members], [], [n for run in members for n in run.notes]
            else:
                rows, answers, notes = make(members)
            for row in rows:
                for column, value in row.items():
                    if isinstance(value, Missing):
                        row[column] = value.cell
                        if value.detail:
                            notes.append(f"{row.get('run', '?')}: `{value.cell}` — {value.detail}")
            if rows:
                # A column only some runs have (an eval at a 4th epoch, say) is "—" for the others; a NaN in
                # a cell stays a real NaN: a diverged loss.
                columns = list(dict.fromkeys(column for row in rows for column in row))
                df = pd.DataFrame([[row.get(c, "—") for c in columns] for row in rows], columns=columns)
                df.attrs["title"], df.attrs["notes"] = title, list(dict.fromkeys(notes))
                df.attrs["answers"] = list(answers)
                tables[key] = df
    return tables


# ---------------------------------------------------------------------------------------------- output

def _display(value):
    if isinstance(value, float):
        if not math.isfinite(value) or value == int(value):
            return str(int(value)) if math.isfinite(value) else str(value)
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value).replace("|", "\\|")  # a pipe would split a Markdown cell


def _json_safe(value):
    # NaN / inf losses are data (a diverged run), but not valid JSON numbers: spell them.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def render(tables, fmt):
    parts = []
    for key, df in tables.items():
        if fmt == "markdown":
            shown = df.apply(lambda column: column.map(_display))
            parts.append(f"## {df.attrs['title']}\n\n{shown.to_markdown(index=False, disable_numparse=True)}\n")
            if df.attrs.get("answers"):
                parts.append("Answers:\n" + "\n".join(f"- {answer}" for answer in df.attrs["answers"]) + "\n")
            if df.attrs["notes"]:
                parts.append("Notes:\n" + "\n".join(f"- {note}" for note in df.attrs["notes"]) + "\n")
        elif fmt == "csv":
            parts.append(f"# {key}\n{df.to_csv(index=False)}")
    if fmt == "json":
        return json.dumps({key: {"title": df.attrs["title"], "notes": df.attrs["notes"],
                                 "answers": df.attrs.get("answers", []),
                                 "rows": [{k: _json_safe(v) for k, v in row.items()}
                                          for row in df.to_dict("records")]}
                           for key, df in tables.items()}, indent=1)
    return "\n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m workshop.fill_tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=["logs"], help="log dirs or .out files (default: logs)")
    parser.add_argument("--format", choices=["markdown", "csv", "json"], default="markdown",
                        help="markdown (with notes), csv (one block per table, after a '# key' line), json")
    args = parser.parse_args(argv)
    run_dirs, outs = find_runs(args.paths)
    if not run_dirs and not outs:
        print(f"no runs found under {', '.join(args.paths)}")
        return 0
    tables = build_tables(args.paths)
    if not tables:
        print(f"no tables yet for the lessons of the {len(run_dirs) + len(outs)} runs under {', '.join(args.paths)}")
        return 0
    print(render(tables, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
