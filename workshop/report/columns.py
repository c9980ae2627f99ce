"""Column definitions: a name (the by-run header), a unit, a description (the notes say it once under a table)
and a reader (run -> value, or a Missing marker saying why not). Lessons look columns up by constant, not text;
a table is a tuple of Columns, a handout layout a list of (label, Column) pairs.
"""

from dataclasses import dataclass
from typing import Callable

from workshop.logparse import Missing, final_summary
from workshop.report.cells import (absent, cpu_peak, gpu_mean_per_gpu, gpu_stat, is_number, manifest_of, manifest_value,
                                   number_or, summary_value, torch_reserved, train_runtime)
from workshop.report.select import config_of, setup_of, world_of
from workshop.report.spread import steady_rate, steady_seconds


@dataclass(frozen=True)
class Column:
    name: str
    unit: str
    description: str
    read: Callable  # run -> value or Missing
    fallback: Missing = Missing("n/a")
    optional: bool = False  # shown only where some run of the table records it (newer run folders' records)

    def value(self, run):
        value = self.read(run)
        return self.fallback if value is None else value


def row_of(run, columns):
    """{column name: value} of one run."""
    return {column.name: column.value(run) for column in columns}


def rows_of(runs, columns):
    """One row per run; an optional column no run records (every cell a marker) is left out of every row."""
    rows = [row_of(run, columns) for run in runs]
    for column in columns:
        if column.optional and all(isinstance(row[column.name], Missing) for row in rows):
            for row in rows:
                del row[column.name]
    return rows


def _estimate_vs_measured(run, estimate_key, measured):
    """'1.20 GiB est. vs 1.40 GiB measured (-14.3%)': the preflight estimate beside the measured peak."""
    preflight = manifest_of(run).get("preflight")
    if not isinstance(preflight, dict):
        return None
    estimate, peak = number_or(preflight.get(estimate_key), None), measured(run)
    if not is_number(estimate):
        return Missing("n/a (no estimate)", f"the preflight record has no {estimate_key}")
    if isinstance(peak, Missing):
        return peak
    gib = peak / 1024
    error = f" ({(estimate - gib) / gib * 100:+.1f}%)" if gib else ""
    return f"{estimate:.2f} GiB est. vs {gib:.2f} GiB measured{error}"


NO_PREFLIGHT = Missing("n/a (no preflight)", "the run's manifest holds no preflight memory estimate")
ESTIMATE_GPU = Column(
    "GPU GiB: estimate vs measured", "GiB",
    "the preflight estimate per GPU beside nvidia-smi's peak of the busiest GPU; % = (estimate - measured) / measured",
    lambda run: _estimate_vs_measured(run, "gpu_gib", lambda r: gpu_stat(r, "max")), NO_PREFLIGHT)
ESTIMATE_HOST = Column(
    "host GiB: estimate vs measured", "GiB",
    "the preflight estimate per node beside psrecord's peak RSS; % = (estimate - measured) / measured",
    lambda run: _estimate_vs_measured(run, "host_gib", cpu_peak), NO_PREFLIGHT)


def memory_limit_note(run):
    """A run on a GPU whose memory was capped to emulate a smaller one says so (the manifest's gpu_memory_limit)."""
    limit = manifest_of(run).get("gpu_memory_limit")
    if isinstance(limit, dict) and is_number(number_or(limit.get("gib"), None)):
        return (f"{run.name}: GPU memory capped at {limit['gib']:g} GiB"
                + (f", emulating {limit['emulates']}" if limit.get("emulates") else ""))
    return None


# The by-run headers the lessons share, by constant: tables, answers and figures look them up by these names.
PEAK_GPU = "peak GPU MiB (nvidia-smi)"
RESERVED = "torch max reserved MiB"
HOST_PEAK = "peak CPU MiB (psrecord)"
HOST_MEAN = "mean CPU MiB (psrecord)"
RUNTIME = "total runtime s (train_runtime)"
PEAK_PER_GPU = "peak GPU MiB per GPU (nvidia-smi)"
MEAN_PER_GPU = "mean GPU MiB per GPU (nvidia-smi)"
TRAIN_RATE = "train samples/s"
STEADY_STEP = "steady s/step (median, 95% interval)"
STEADY_SAMPLES = "steady samples/s (median, 95% interval)"
MODEL_STATES = "model states per process MiB (engine)"
STATES_WHERE = "model states live on"


# ---------------------------------------------------------------------------------------------- one run's columns
def _events(run):
    return [] if isinstance(run.events, Missing) else run.events


def training_losses(run):
    """{step: training loss} of every loss the run logged (its log_history), in step order."""
    return {event["step"]: event["loss"] for event in _events(run) if "loss" in event and "step" in event}


def _summary(run, key, what):
    return summary_value(run, final_summary(_events(run)), key, what)


def _last_eval(run, key, what):
    evals = [e for e in _events(run) if "eval_loss" in e]
    return summary_value(run, evals[-1] if evals else None, key, what)


def model_states_mib(run):
    """The engine's own count of model-state bytes per process (parameters + gradients + optimizer states), MiB."""
    states = manifest_of(run).get("model_states")
    sizes = states.get("bytes_per_process") if isinstance(states, dict) else None
    if not isinstance(sizes, dict) or not all(is_number(number_or(v, None)) for v in sizes.values()) or not sizes:
        return Missing("n/a (no model-state record)", "the manifest has no model_states (runs before it was "
                                                      "recorded, or a run without DeepSpeed's engine)")
    return sum(sizes.values()) / 2 ** 20


def where_states_live(run):
    """'parameters cuda, gradients cuda, optimizer cpu': where the engine keeps each part of the model states."""
    states = manifest_of(run).get("model_states")
    device = states.get("device") if isinstance(states, dict) else None
    if not isinstance(device, dict):
        return Missing("n/a (no model-state record)")
    return ", ".join(f"{part} {device[part]}" for part in ("parameters", "gradients", "optimizer") if part in device)


def _subset_per_gpu(run):
    subset = manifest_of(run).get("subset_size")
    return subset // world_of(run) if isinstance(subset, int) else absent(run, "subset_size", "manifest.json")


MODEL_COL = Column("model", "", "the model", lambda run: setup_of(run)[0])
INIT_COL = Column("init", "", "pretrained or random initial weights", lambda run: setup_of(run)[1])
SUBSET_COL = Column("subset", "samples", "training samples", lambda run: setup_of(run)[2])
CONFIG_COL = Column("config", "", "the DeepSpeed configuration", config_of)
RUN_COL = Column("run", "", "the run id", lambda run: run.name)
STATUS_COL = Column("status", "", "how the run ended", lambda run: run.status)
WHO = (MODEL_COL, INIT_COL, SUBSET_COL, CONFIG_COL, RUN_COL, STATUS_COL)
PEAK_GPU_COL = Column(PEAK_GPU, "MiB", "nvidia-smi's largest memory.used of the busiest GPU",
                      lambda run: gpu_stat(run, "max"))
RESERVED_COL = Column(RESERVED, "MiB", "torch.cuda.max_memory_reserved", torch_reserved)
HOST_PEAK_COL = Column(HOST_PEAK, "MiB", "psrecord's largest RSS of the training and its children", cpu_peak)
HOST_MEAN_COL = Column(HOST_MEAN, "MiB", "psrecord's mean RSS",
                       lambda run: run.cpu if isinstance(run.cpu, Missing) else float(run.cpu["real_mib"].mean()))
RUNTIME_COL = Column(RUNTIME, "s", "the Trainer's train_runtime", train_runtime)
WALL_COL = Column("wall s (manifest)", "s", "the manifest's wall time, start-up included",
                  lambda run: manifest_value(run, "wall_seconds", what="wall_seconds"))
STEADY_STEP_COL = Column(STEADY_STEP, "s", "median seconds per optimizer step after warm-up (steps.jsonl), with "
                         "its 95% interval", steady_seconds, optional=True)
STEADY_SAMPLES_COL = Column(STEADY_SAMPLES, "samples/s", "median samples per second of the steady steps, with its "
                            "95% interval", lambda run: steady_rate(run, "samples", "samples/s"), optional=True)
MODEL_STATES_COL = Column(MODEL_STATES, "MiB", "the engine's model-state bytes per process (parameters, gradients, "
                          "optimizer states): exact, noise-free", model_states_mib, optional=True)
STATES_WHERE_COL = Column(STATES_WHERE, "", "where the engine keeps parameters, gradients and optimizer "
                          "states (cuda, cpu, nvme)", where_states_live, optional=True)
ZERO_COLUMNS = (*WHO, PEAK_GPU_COL, RESERVED_COL, HOST_PEAK_COL, RUNTIME_COL, WALL_COL, STEADY_STEP_COL,
                MODEL_STATES_COL, STATES_WHERE_COL)

PROCESSES_COL = Column("GPUs (processes)", "", "processes (one per GPU)", world_of)
NODES_COL = Column("nodes", "", "nodes", lambda run: manifest_of(run).get("nodes") or 1)  # older manifests: one
PER_GPU_COL = Column("samples per GPU", "samples", "training samples per process", _subset_per_gpu)
TRAIN_RATE_COL = Column(TRAIN_RATE, "samples/s", "the Trainer's train_samples_per_second",
                        lambda run: _summary(run, "train_samples_per_second", TRAIN_RATE))
STEPS_RATE_COL = Column("train steps/s", "steps/s", "the Trainer's train_steps_per_second",
                        lambda run: _summary(run, "train_steps_per_second", "train steps/s"))
TRAIN_LOSS_COL = Column("train_loss (run mean)", "", "the Trainer's train_loss",
                        lambda run: _summary(run, "train_loss", "train_loss"))
EVAL_LOSS_COL = Column("eval loss (last eval)", "", "the last evaluation's loss",
                       lambda run: _last_eval(run, "eval_loss", "eval loss"))
EVAL_RATE_COL = Column("eval samples/s (last eval)", "samples/s", "the last evaluation's samples/s",
                       lambda run: _last_eval(run, "eval_samples_per_second", "eval samples/s"))
PEAK_PER_GPU_COL = Column(PEAK_PER_GPU, "MiB", "the busiest GPU's largest memory.used: it sets the limit",
                          lambda run: gpu_stat(run, "max"))
MEAN_PER_GPU_COL = Column(MEAN_PER_GPU, "MiB", "each GPU's samples averaged, then the GPUs", gpu_mean_per_gpu)
MULTI_GPU_COLUMNS = (*WHO, PROCESSES_COL, NODES_COL, PER_GPU_COL, RUNTIME_COL, TRAIN_RATE_COL, STEPS_RATE_COL,
                     TRAIN_LOSS_COL, EVAL_LOSS_COL, EVAL_RATE_COL, PEAK_PER_GPU_COL, MEAN_PER_GPU_COL, RESERVED_COL,
                     HOST_PEAK_COL, HOST_MEAN_COL, WALL_COL, STEADY_STEP_COL, STEADY_SAMPLES_COL, MODEL_STATES_COL,
                     STATES_WHERE_COL)
