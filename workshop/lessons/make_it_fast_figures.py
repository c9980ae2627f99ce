"""Lesson 4's benchmark results and figures (notebooks/04): benchmarks/bench.py's committed results as a lesson
table, the speed ladder and the start-up breakdown. The lesson's own table (your runs) is in make_it_fast.py."""

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from workshop.report.zero import config_label

# bench.py's result keys -> the table's headers (words and units) and how each is scaled, in the order shown
BENCH_COLUMNS = (("real_tokens_per_s", "real tokens/s", 1), ("mfu", "MFU %", 100), ("step_s", "s/step", 1),
                 ("timed_steps", "timed steps", 1), ("startup_s", "start-up s", 1),
                 ("torch_max_reserved_mib", "torch max reserved MiB", 1), ("final_eval_loss", "final eval loss", 1))
# workshop/startup.py's marks: each phase is named after the mark that ends it, shown as what happens before it
PHASES = {"command_started": "launcher, until the command starts", "process_start": "until Python starts",
          "imports_done": "imports (torch, transformers)", "ops_loaded": "loading DeepSpeed's ops",
          "arguments_ready": "reading the arguments", "model_built": "building the model",
          "data_ready": "loading and tokenizing the data", "trainer_built": "building the Trainer",
          "engine_ready": "DeepSpeed's engine set-up", "first_step_begin": "until the first step begins",
          "first_step_done": "the first optimizer step"}


def bench_results(folder):
    """Every benchmark result (benchmarks/bench.py's *.json) in `folder` as one DataFrame: one row per run,
    with the file it came from."""
    frames = []
    for path in sorted(Path(folder).glob("*.json")):
        result = pd.read_json(path, typ="series")
        if "runs" in result:
            frames.append(pd.DataFrame(result["runs"]).assign(benchmark=path.stem))
    if not frames:
        print(f"no benchmark results (*.json from benchmarks/bench.py) in {Path(folder).name}")
        return pd.DataFrame(columns=["benchmark", "variant", "real_tokens_per_s", "mfu"])
    return pd.concat(frames, ignore_index=True)


def bench_table(results, title):
    """The benchmark rows as a lesson table: one row per change, the figures in words and units (MFU in %), the
    benchmark files it came from in a note. workshop.notebook.show_frame shows it with the CLI's rounding."""
    present = [(key, header, scale) for key, header, scale in BENCH_COLUMNS if key in results]
    table = pd.DataFrame({"change": results["variant"].values})
    for key, header, scale in present:
        table[header] = [value * scale if pd.notna(value) else "n/a (not measured)" for value in results[key]]
    devices = ", ".join(dict.fromkeys(results["device"].dropna())) if "device" in results else "not recorded"
    files = ", ".join(f"{name}.json" for name in dict.fromkeys(results["benchmark"]))
    table.attrs.update(title=title, answers=[], notes=[f"from {files} ({devices}); each row adds one change to the "
                                                       "row above, timed over the steady steps"])
    return table


def speed_ladder(results, title="real tokens/s per change"):
    """Bar chart of real tokens/s per variant (log scale), MFU written on each bar, inside the frame."""
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax = fig.subplots()
    done = results.dropna(subset=["real_tokens_per_s"])
    bars = ax.bar(range(len(done)), done["real_tokens_per_s"], color="tab:blue")
    for bar, mfu in zip(bars, done["mfu"]):
        if pd.notna(mfu):
            ax.annotate(f"{mfu * 100:.1f}% MFU", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(done)), done["variant"], rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    if len(done):  # room above the tallest bar for its label: a log axis gets no margin of its own
        ax.set_ylim(done["real_tokens_per_s"].min() / 2, done["real_tokens_per_s"].max() * 2.5)
    ax.set_ylabel("real tokens/s (log scale)")
    ax.set_title(title, fontsize=11)
    return fig


def startup_breakdown(results, title="launch to first optimizer step: where the seconds go"):
    """Stacked bars of each variant's start-up phases (workshop/startup.py; medians over repeats) from
    bench_results(): the phases in the order a run passes them, named in words."""
    rows = results.dropna(subset=["startup_phases_s"]) if "startup_phases_s" in results else results.iloc[:0]
    fig = Figure(figsize=(10, 2.5 + 0.4 * rows["variant"].nunique()), layout="constrained")
    ax = fig.subplots()
    if rows.empty:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no start-up breakdown in these results", ha="center", va="center")
        return fig
    names = [" ".join([config_label(config), *launcher]) for config, *launcher in map(str.split, rows["variant"])]
    phases = pd.DataFrame(list(rows["startup_phases_s"]), index=names)
    phases = phases.groupby(level=0, sort=False).median()[[name for name in PHASES if name in phases]]
    phases.rename(columns=PHASES).plot.barh(stacked=True, ax=ax, colormap="tab20", width=0.7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the launch")
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="phase (in order)", title_fontsize=8)
    return fig
