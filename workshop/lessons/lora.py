"""Lesson 6, LoRA and QLoRA (lora/train.py, slurm/lora.slurm, slurm/qlora.slurm): full fine-tuning, LoRA and QLoRA
side by side, method x ZeRO stage, from the class's own runs, and the quiz answers computed from that table.

The handout has no such table, so it has one layout: one row per (model and data, method, stage, offload), the
latest run of each. Trainable parameters come from the manifest's `peft` record (a full fine-tune trains all of its
`parameters`); memory, speed and loss are the columns lessons 4 and 5 show, read by the same functions.
"""
import json
from pathlib import Path

from matplotlib.figure import Figure

from workshop.logparse import Missing
from workshop.report.cells import cpu_peak, is_number, manifest_of, trained_on_cpu
from workshop.report.columns import RESERVED
from workshop.report.compare import Side, compare, mismatch, refused
from workshop.report.engine import Table
from workshop.report.figures import grouped_bars, legend_all
from workshop.report.select import latest_runs, setup_label, setup_of
from workshop.report.speed_cells import STEADY_TOKENS, speed_row
from workshop.report.spread import steady_rate

METHODS = ("full", "lora", "qlora")
TRAINABLE, SHARE = "trainable parameters", "trainable %"
LOSS, SAVED = "final eval loss", "saved model MiB"


def method_of(run):
    """full, lora or qlora: what the run trained, from its manifest."""
    settings = manifest_of(run).get("settings") or {}
    peft = settings.get("peft") or "none"
    return "full" if peft == "none" else str(peft)


def stage_of(run):
    """'plain Trainer', or 'ZeRO N' with ' offload' where its DeepSpeed config offloads."""
    manifest = manifest_of(run)
    stage = manifest.get("zero_stage")
    if not isinstance(stage, int):
        return "plain Trainer"
    offload = "offload" in Path(str(manifest.get("deepspeed_config") or "")).stem
    return f"ZeRO {stage}{' offload' if offload else ''}"


def trainable(run):
    """(trainable, all) parameters: the peft record's, else a full fine-tune's whole model."""
    manifest = manifest_of(run)
    record = manifest.get("peft")
    if isinstance(record, dict) and _count(record.get("trainable_parameters")) and _count(record.get("total_parameters")):
        return float(record["trainable_parameters"]), float(record["total_parameters"])
    total = manifest.get("parameters")
    if method_of(run) == "full" and _count(total):
        return float(total), float(total)
    return None


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def saved_size(run):
    """MiB of <output_dir>/final on disk: the whole model, or the adapter alone (and the tokenizer either way)."""
    settings = manifest_of(run).get("settings") or {}
    if settings.get("save_final") is False:
        return Missing("n/a (not saved)", "the run was told --no-save-final")
    final = Path(str(settings.get("output_dir") or "")) / "final"
    files = [path for path in final.glob("*") if path.is_file()] if final.is_dir() else []
    if not files:
        return Missing("not found", f"no saved model in {final} (moved, or saved relative to another folder)")
    return sum(path.stat().st_size for path in files) / 2**20


def answer_quality(run, key):
    path = run.path / "answer_quality.json"
    try:
        return json.loads(path.read_text())["after"][key]
    except (OSError, ValueError, KeyError, TypeError):
        return Missing("n/a (not scored)", "no answer_quality.json: --score-answers (on with a CUDA GPU) scores "
                                           "the saved model at the end; python -m workshop.answer_quality later")


def row_of(run):
    counts, speed = trainable(run), speed_row(run)
    missing = Missing("n/a", "the manifest has no parameter count")
    row = {"model": setup_label(setup_of(run)), "method": method_of(run), "stage": stage_of(run), "run": run.name,
           TRAINABLE: counts[0] if counts else missing,
           SHARE: 100 * counts[0] / counts[1] if counts else missing,
           "peak GPU MiB": speed[RESERVED], "peak host MiB": cpu_peak(run),
           STEADY_TOKENS: speed.get(STEADY_TOKENS, Missing("n/a (no step times)", "the run has no steps.jsonl")),
           LOSS: speed[LOSS], SAVED: saved_size(run)}
    row.update({name: answer_quality(run, key) for name, key in (("EM", "exact_match"), ("F1", "f1"))})
    return row


def _order(row):
    stage = row["stage"]
    return (row["model"], -1 if stage == "plain Trainer" else int(stage.split()[1]), stage,
            METHODS.index(row["method"]) if row["method"] in METHODS else 9)


def table(runs):
    key = lambda run: (method_of(run), stage_of(run))  # noqa: E731
    chosen, notes = latest_runs(runs, key=key)
    rows = sorted((row_of(run) for run in chosen), key=_order)
    repeats = {}  # every completed run of a row's config: the run-to-run spread its one shown run hides
    for run in runs:
        if run.status == "completed":
            repeats.setdefault((*setup_of(run), key(run)), []).append(run)
    by_row = {run.name: repeats.get((*setup_of(run), key(run)), []) for run in chosen}
    return rows, answers(rows, {run.name: run for run in chosen}, by_row), notes


# what a LoRA run and its full fine-tune may differ in and still be compared: the method, and its own settings
PEFT_SETTINGS = ("peft", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "learning_rate", "config_name",
                 "bf16", "precision")


def _script_stage(stage):
    return "none" if stage == "plain Trainer" else "stage" + stage.split()[1] + ("_offload" if "offload" in stage
                                                                                   else "")


def answers(rows, runs, repeats=None):
    """How many fewer parameters LoRA and QLoRA train than full fine-tuning, and what each did to memory, speed and
    loss, for each (model, stage) that has both (runs that differ in more than the method are not compared); a
    missing half says which run to make."""
    found, by_where = [], {}
    for row in rows:
        by_where.setdefault((row["model"], row["stage"]), {})[row["method"]] = row
    for (model, stage), methods in by_where.items():
        full, adapters = methods.get("full"), [methods[m] for m in ("lora", "qlora") if m in methods]
        if not (full and adapters):
            flags = " --peft none" if adapters else ""
            found.append(f"{model}, {stage}: only {', '.join(methods)} so far: run `bash slurm/lora.slurm "
                         f"{_script_stage(stage)}{flags}` with the same flags to compare.")
            continue
        for lora in adapters:
            stopped = any(runs[row["run"]].status.startswith("oom") for row in (full, lora))
            # a run that ran out of memory stopped early: its steps done are the finding, not a mismatch
            differing = mismatch(runs[full["run"]], runs[lora["run"]], PEFT_SETTINGS + ("steps done",) * stopped)
            if differing:
                found.append(refused(f"{model}, {stage}", ("full", lora["method"]), differing))
                continue
            clauses = _clauses(full, lora, runs, repeats or {})
            found.append(f"{model}, {stage}: " + "; ".join(clauses) + ".")
    return found


def _clauses(full, lora, runs, repeats):
    clauses = []
    if is_number(full[TRAINABLE]) and is_number(lora[TRAINABLE]):
        clauses.append(f"{lora['method']} trains {lora[TRAINABLE]:,.0f} parameters, {lora[SHARE]:.2f}% of full "
                       f"fine-tuning's {full[TRAINABLE]:,.0f} ({full[TRAINABLE] / lora[TRAINABLE]:,.0f}x fewer)")
    out = [row for row in (full, lora) if runs[row["run"]].status.startswith("oom")]
    if out:  # a peak at the card's (or --gpu-memory-limit's) edge is where it stopped, not what it needed
        fit = [row for row in (full, lora) if row not in out]
        clauses.append(" and ".join(f"{row['method']} ran out of GPU memory ({row['peak GPU MiB']:,.0f} MiB "
                                    "reserved when it stopped)" for row in out)
                       + "".join(f", where {row['method']} fit (peak {row['peak GPU MiB']:,.0f} MiB)" for row in fit
                                 if is_number(row["peak GPU MiB"])))
    for column, what in (("peak GPU MiB", "peak GPU memory"), ("peak host MiB", "peak host memory")):
        if not out and is_number(full[column]) and is_number(lora[column]):
            clauses.append(f"{what} {lora[column]:,.0f} vs {full[column]:,.0f} MiB (single runs, no spread)")
    speed = _repeats_disagree(full, lora, repeats) or compare(
        Side("full", full[STEADY_TOKENS]), Side(lora["method"], lora[STEADY_TOKENS]), "steady real tokens/s")
    if speed:
        on_cpu = all(trained_on_cpu(runs[row["run"]]) for row in (full, lora))
        clauses.append(speed + (ON_CPU if on_cpu and speed.startswith(lora["method"]) else ""))
    if is_number(full[LOSS]) and is_number(lora[LOSS]):
        clauses.append(f"final eval loss {lora[LOSS]:.3f} vs {full[LOSS]:.3f}")
    return clauses


# On the tiny model the adapters are 12% of the parameters (under 1% of a real BLOOM's), so the work LoRA saves, the
# frozen weights' gradients and optimizer states, is small beside what its adapters add.
ON_CPU = (" (on a CPU, with a model this small: the adapters are a large share of its parameters, so the work LoRA "
          "saves is small beside the work they add; this says nothing of LoRA's speed on a GPU at a real size; the "
          "GPU reference in notebook 06 measures it)")


def _repeats_disagree(full, lora, repeats):
    """A clause when a config ran more than once and its repeats' steady tokens/s lie further apart than their own
    intervals: then one run's interval understates the noise, and the methods' speeds are not compared."""
    for row in (full, lora):
        figures = [steady_rate(run, "tokens", "tokens/s") for run in repeats.get(row["run"], ())]
        figures = [f for f in figures if hasattr(f, "separated_from")]
        if any(a.separated_from(b) for i, a in enumerate(figures) for b in figures[i + 1:]):
            shown = " and ".join(f"{f.value:,.0f}" for f in figures)
            return (f"steady real tokens/s: no conclusion: {len(figures)} runs of {row['method']} gave {shown} "
                    "tokens/s, further apart than each run's 95% interval (at this size run-to-run variation "
                    "outweighs the method); compare the methods on a larger model or more steps")
    return None


TABLES = (Table("lora", "LoRA and QLoRA vs full fine-tuning, per ZeRO stage", table, each_run=False),)


def lora_bars(table):
    """Lesson 6: trainable % (left), peak host memory (middle) and steady tokens/s (right) per ZeRO stage, one bar per
    method, from build_tables(...)["lora"] (or None). A cell without a number gets no bar."""
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    axes = fig.subplots(1, 3)
    rows = [] if table is None else [row for _, row in table.iterrows()]
    groups = list(dict.fromkeys(f"{row['stage']}\n{row['model']}" for row in rows))
    notes = []
    for ax, column, unit in zip(axes, (SHARE, "peak host MiB", STEADY_TOKENS), ("%", "MiB", "tokens/s")):
        values = {(f"{row['stage']}\n{row['model']}", row["method"]): row[column] for row in rows}
        drawn = grouped_bars(ax, groups, METHODS, values, unit)
        ax.set_title(column.split(" (")[0], fontsize=11)
        notes += [f"{column}: no {m} numbers (see the table's notes)" for m in METHODS
                  if drawn and m not in drawn and any(row["method"] == m for row in rows)]
    return legend_all(fig, list(axes), notes)
