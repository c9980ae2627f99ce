"""Lesson 4, make it fast (notebooks/04, slurm/fast.slurm): the speed table (workshop/speed.py's figures in the
manifest) and the benchmark figures. The handout has no such table, so it has one layout: one row per run."""

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from workshop.logparse import Missing
from workshop.report.cells import absent, gpu_stat, manifest_of as _manifest, number_or, torch_reserved
from workshop.report.columns import PEAK_GPU, RESERVED
from workshop.report.engine import Table

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
                                      ("chunked loss", settings.get("chunked_loss")),
                                      ("torch.compile", settings.get("torch_compile")),
                                      ("fewer host syncs", settings.get("fewer_syncs"))) if on]
    if settings.get("optim"):
        changes.append(settings["optim"])
    if settings.get("attention", "eager") != "eager":
        changes.append(f"{settings['attention']} attention")
    return ", ".join(changes) or "seed"


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
    row[PEAK_GPU] = gpu_stat(run, "max")
    row[RESERVED] = torch_reserved(run)
    return row



# ---------------------------------------------------------------------------------------------- make it fast

def bench_results(folder):
    """Every benchmark result (benchmarks/bench.py's *.json) in `folder` as one DataFrame: one row per run,
    with the file it came from."""
    frames = []
    for path in sorted(Path(folder).glob("*.json")):
        result = pd.read_json(path, typ="series")
        if "runs" in result:
            frames.append(pd.DataFrame(result["runs"]).assign(benchmark=path.stem))
    if not frames:
        print(f"no benchmark results (*.json from benchmarks/bench.py) in {folder}")
        return pd.DataFrame(columns=["benchmark", "variant", "real_tokens_per_s", "mfu"])
    return pd.concat(frames, ignore_index=True)


def speed_ladder(results, title="real tokens/s per change"):
    """Bar chart of real tokens/s per variant (log scale), MFU written on each bar."""
    fig = Figure(figsize=(9, 3.5))
    ax = fig.subplots()
    done = results.dropna(subset=["real_tokens_per_s"])
    labels = [f"{row.variant}\n({row.benchmark})" for row in done.itertuples()]
    bars = ax.bar(range(len(done)), done["real_tokens_per_s"], color="tab:blue")
    for bar, mfu in zip(bars, done["mfu"]):
        if pd.notna(mfu):
            ax.annotate(f"{mfu * 100:.1f}% MFU", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(done)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("real tokens/s")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def startup_breakdown(results, title="launch to first optimizer step: where the seconds go"):
    """Stacked bars of each variant's start-up phases (workshop/startup.py; medians over repeats) from
    bench_results(): the phases in the order a run passes them."""
    from workshop.startup import ORDER

    rows = results.dropna(subset=["startup_phases_s"]) if "startup_phases_s" in results else results.iloc[:0]
    fig = Figure(figsize=(10, 2.5 + 0.4 * rows["variant"].nunique()))
    ax = fig.subplots()
    if rows.empty:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no start-up breakdown in these results", ha="center", va="center")
        return fig
    phases = pd.DataFrame(list(rows["startup_phases_s"]), index=rows["variant"].values)
    phases = phases.groupby(level=0, sort=False).median()[[name for name in ORDER if name in phases]]
    phases.plot.barh(stacked=True, ax=ax, colormap="tab20", width=0.7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (each phase ends at the mark it is named after)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


TABLES = (Table("make_it_fast", "Make it fast: speed of the steady training steps (workshop/speed.py)", make_it_fast),)
