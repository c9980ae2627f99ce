"""Lesson 4, make it fast (notebooks/04, slurm/fast.slurm): the speed table (workshop/speed.py's figures in the
manifest) and the benchmark figures. The handout has no such table, so it has one layout: one row per run."""

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from workshop.report.engine import Table
from workshop.report.speed_cells import speed_row as make_it_fast

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
