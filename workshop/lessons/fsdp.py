"""Lesson 7, FSDP2 beside ZeRO (fsdp/train.py, slurm/fsdp.slurm, notebooks/07): two tables.

`fsdp_mapping`: which ZeRO config the lesson runs beside which --fsdp mode, generated from the JSON files the runs
read and workshop/fsdp_modes.py's MODES (not typed by hand): what each shards, where each offloads, and which ZeRO knobs of
those files have no FSDP2 counterpart in the lesson. `fsdp_measured`: one row per run of the lesson, ZeRO and FSDP2
alike: what wrapped the model (the manifest's `wrapping`, not the flag), model-state bytes per process, host peak,
steady step time and tokens/s with their intervals, the loss after the same steps, checkpoint size and save time
(as two tables: `fsdp_memory`, and `fsdp_measured` for speed, loss and checkpoints).
"""
import json
from statistics import median

from workshop.config import REPO
from workshop.fsdp_modes import MODES
from workshop.logparse import Missing
from workshop.report.cells import manifest_of, manifest_value
from workshop.report.columns import (HOST_PEAK_COL, MODEL_STATES_COL, PEAK_GPU_COL, PROCESSES_COL, RUN_COL,
                                     STATES_WHERE_COL, STATUS_COL, STEADY_STEP_COL, Column, row_of,
                                     training_losses)
from workshop.report.engine import Table
from workshop.report.spread import MIN_STEADY, Spread, median_interval, steady_rate
from workshop.report.speed_cells import STEADY_TOKENS

PAIRS = (("stage2", "shard_grad_op"), ("stage3", "full_shard"), ("stage3_offload", "full_shard_offload"))
CONFIGS = tuple(zero for zero, _ in PAIRS)  # the registry's `configs` of the lesson
MAPPED = {"stage", "offload_param", "offload_optimizer"}  # the knobs the mapping's columns read


def _zero(name: str) -> dict:
    return json.loads((REPO / "deepspeed_single_gpu" / "configs" / f"{name}.json").read_text())["zero_optimization"]


def _offload(zero: dict) -> str:
    parts = [f"{part} -> {zero[key]['device']}" for part, key in (("parameters", "offload_param"),
                                                                   ("optimizer", "offload_optimizer"))
             if isinstance(zero.get(key), dict) and zero[key].get("device", "none") != "none"]
    return ", ".join(parts) or "none"


def _sharded(stage: int) -> str:
    return {1: "optimizer states", 2: "optimizer states, gradients",
            3: "optimizer states, gradients, parameters"}.get(stage, "nothing")


def mapping(runs):
    """The mapping table (it reads the files, not the runs: it is the same for every class), shown where the logs
    hold a run of this lesson (a folder of other lessons' runs gets no table of lesson 7's)."""
    if not runs:
        return [], [], []
    rows = []
    for config, mode in PAIRS:
        zero, fsdp = _zero(config), MODES[mode]
        rows.append({
            "ZeRO config": config, "ZeRO stage": zero["stage"], "ZeRO shards": _sharded(zero["stage"]),
            "ZeRO offload": _offload(zero),
            "--fsdp": mode,
            # FSDP2 always shards parameters at rest; reshard_after_forward decides whether they stay sharded
            # between forward and backward (ZeRO-3) or stay whole until the backward is done (ZeRO-2's footprint)
            "FSDP2 reshard after forward": fsdp["reshard_after_forward"],
            "FSDP2 offload": "all states to the CPU (CPUOffloadPolicy)" if fsdp.get("offload") else "none",
        })
    # the knobs without a counterpart go to the notes: as a column they made the table wider than a notebook page
    notes = ["generated from deepspeed_single_gpu/configs/<config>.json and workshop/fsdp_modes.py's MODES",
             *(f"{config}: ZeRO knobs without an FSDP2 counterpart here: "
               f"{', '.join(sorted(set(_zero(config)) - MAPPED)) or 'none'}" for config, _ in PAIRS),
             "stage3_gather_16bit_weights_on_model_save: FSDP2 gathers the whole model at save time instead "
             "(workshop.fsdp.full_state_dict); its checkpoint's sharded state is DCP (fsdp_dcp/)"]
    return rows, [], notes


def _sharding(run):
    settings = manifest_of(run).get("settings") or {}
    if settings.get("fsdp"):
        return f"FSDP2 {settings['fsdp']}"
    stage = manifest_of(run).get("zero_stage")
    return f"ZeRO-{stage}" if stage is not None else Missing("n/a (no record)", "neither --fsdp nor a ZeRO stage")


def _wrapped(run):
    record = manifest_of(run).get("wrapping")
    if not isinstance(record, dict):
        return Missing("n/a (not recorded)", "runs before issue 26 did not record what wrapped the model")
    return (f"{record.get('wrapper')}: {record.get('dtensor_parameters')}/{record.get('parameters')} DTensor, "
            f"share {record.get('local_share')}")


def _last_loss(run):
    losses = training_losses(run)
    return losses[max(losses)] if losses else Missing("n/a (no loss logged)")


def _last_step(run):
    losses = training_losses(run)
    return max(losses) if losses else Missing("n/a (no loss logged)")


def _saves(run):
    """The run's checkpoint saves (workshop/save_times.py), or why it has none."""
    manifest = manifest_of(run)
    saves = manifest.get("checkpoint_saves")
    if isinstance(saves, list) and saves:
        return saves
    if (manifest.get("settings") or {}).get("save_strategy") == "no":
        return Missing("n/a (no checkpoint)", "the run saved no checkpoint (--save-strategy no)")
    return Missing("n/a (not recorded)", "runs before issue 26 did not record their checkpoint saves "
                   "(checkpoint_saves), or the run ended before its first checkpoint")


def _checkpoint_mib(run):
    saves = _saves(run)
    return saves if isinstance(saves, Missing) else saves[-1]["bytes"] / 2**20


def _save_seconds(run):
    """The median save; with its 95% interval where there are enough saves to bound it."""
    saves = _saves(run)
    if isinstance(saves, Missing):
        return saves
    seconds = [save["seconds"] for save in saves]
    if len(seconds) < MIN_STEADY:
        return median(seconds)  # too few saves to bound a median: the median alone
    return Spread(*median_interval(seconds), len(seconds), "s")


SHARDING_COL = Column("sharding", "", "--fsdp mode or ZeRO stage", _sharding)
OWN_RSS_COL = Column("own RSS peak MiB", "MiB", "the training process's own peak RSS",
                     lambda run: manifest_value(run, "peak_memory", "host_peak_rss_mib",
                                                what="peak_memory.host_peak_rss_mib"))
PRECISION_COL = Column("precision", "", "fp32, fp16 or bf16, as the run trained (manifest)",
                       lambda run: manifest_of(run).get("precision") or Missing("n/a (not recorded)"))
WHO = (RUN_COL, STATUS_COL, SHARDING_COL, PROCESSES_COL)  # both tables' first columns: which run, what it ran
# Two tables, not one: the page holds about twelve columns (and a reference's rows under the student's)
MEMORY_COLUMNS = (
    *WHO, Column("wrapped by", "", "what the Trainer trained, and how many parameters were DTensor shards "
                 "(manifest)", _wrapped),
    MODEL_STATES_COL, STATES_WHERE_COL, PEAK_GPU_COL, HOST_PEAK_COL, OWN_RSS_COL)
SPEED_COLUMNS = (
    *WHO, PRECISION_COL, STEADY_STEP_COL,
    Column(STEADY_TOKENS, "tokens/s", "median real tokens/s of all processes after warm-up, with its 95% interval "
           "(steps.jsonl)", lambda run: steady_rate(run, "tokens", "tokens/s")),
    Column("last step", "", "the step of the last logged loss", _last_step),
    Column("loss (last logged)", "", "the last logged training loss: equal steps, equal data, comparable",
           _last_loss),
    Column("checkpoint MiB", "MiB", "the last checkpoint's files on disk: weights, optimizer states and the rest "
           "(manifest checkpoint_saves)", _checkpoint_mib),
    Column("save s", "s", "seconds per checkpoint save, the median of the run's saves; its 95% interval where it "
           f"saved {MIN_STEADY} times or more (manifest checkpoint_saves)", _save_seconds))


def measured(run):
    """Every measured cell of a run, both tables' columns."""
    return {**row_of(run, MEMORY_COLUMNS), **row_of(run, SPEED_COLUMNS)}


def memory_table(runs):
    """One row per run: what wrapped the model, its model states per process and where they live, the peaks."""
    return [row_of(run, MEMORY_COLUMNS) for run in runs], [], [note for run in runs for note in run.notes]


def measured_table(runs):
    """One row per run: speed, loss and checkpoints; the answers compare FSDP2 with its ZeRO pair per precision
    (fsdp_precision.py)."""
    from workshop.lessons.fsdp_precision import NOTE, answers

    found = answers(runs, {zero: mode for zero, mode in PAIRS})
    return ([row_of(run, SPEED_COLUMNS) for run in runs], found,
            [note for run in runs for note in run.notes] + ([NOTE] if found else []))


TABLES = (Table("fsdp_mapping", "ZeRO <-> FSDP2: the lesson's configs side by side (generated)", mapping,
                each_run=False),
          Table("fsdp_memory", "ZeRO and FSDP2 on the same runs: memory (one row per run)", memory_table,
                each_run=False),
          Table("fsdp_measured", "ZeRO and FSDP2 on the same runs: speed, loss and checkpoints (one row per run)",
                measured_table, each_run=False))


def states_bars(table):
    """Lesson 7: model-state MiB per process (left) and host peak RSS (right), one bar per run, ZeRO and FSDP2 side
    by side, from build_tables(...)["fsdp_memory"] (or None). A cell without a number gets no bar."""
    from matplotlib.figure import Figure

    from workshop.report.figures import grouped_bars, legend_all

    fig = Figure(figsize=(10, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    rows = [] if table is None else [row for _, row in table.iterrows()]
    # labels in words: "FSDP2 full shard", not the flag's identifier
    groups = [f"{str(row[SHARDING_COL.name]).replace('_', ' ')}\n{row[PROCESSES_COL.name]} process(es)" for row in rows]
    notes = []
    for ax, column, unit in ((left, MODEL_STATES_COL.name, "MiB per process"),
                             (right, OWN_RSS_COL.name, "MiB (one process)")):
        values = {(group, "run"): row.get(column) for group, row in zip(groups, rows)}
        if not grouped_bars(ax, groups, ("run",), values, unit) and rows:
            notes.append(f"{column}: no numbers (see the table's notes)")
        ax.set_title(column, fontsize=11)
    fig.suptitle("ZeRO and FSDP2 on the same runs", fontsize=12)
    return legend_all(fig, [left, right], notes)
