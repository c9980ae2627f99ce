"""Lesson 3's tables (weak scaling, ZeRO on 2 GPUs, offload savings) and figures on real run folders.

The source is a real run on an H100 (tests/data/logs/run_complete/baseline-1001: nvidia-smi samples, torch
peaks, psrecord): each case copies it under a lesson-3 name and changes one thing (world size, config, a scaled
memory column, the runtime), so the expected values are read from the copied files, never typed in.
The real 2-process CPU runs of every ZeRO config are in tests/test_multi_gpu.py.
"""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

from test_fill_tables_zero import edit_manifest, events, manifest, rows_by_config, set_train_runtime
from workshop import plots
from workshop.fill_tables import ZERO_2GPU, build_tables, render
from workshop.logparse import final_summary
from workshop.monitor_logs import read_gpu_csv, read_psrecord
from workshop.report.zero import config_label

DATA = Path(__file__).parent / "data" / "logs"
GPU_RUN = DATA / "run_complete" / "baseline-1001"
WEAK, ZERO, SAVINGS = ("deepspeed_multi_gpu_weak_scaling", "deepspeed_multi_gpu_zero_2gpu",
                       "deepspeed_multi_gpu_zero_savings")
RUNTIME, PEAK, MEAN = ("total runtime s (train_runtime)", "peak GPU MiB per GPU (nvidia-smi)",
                       "mean GPU MiB per GPU (nvidia-smi)")


def lesson3_run(dest, name, config, gpus, per_gpu=20, memory_scale=1.0):
    """The H100 run as a lesson-3 run on `gpus` GPUs: its nvidia-smi rows repeated for every GPU index
    (GPU k's memory.used scaled by memory_scale * (1 - 0.1 k), so the GPUs differ and the busiest is GPU 0)."""
    run = shutil.copytree(GPU_RUN, dest / name)
    edit_manifest(run, run_id=name, lesson="deepspeed_multi_gpu", config_name=config, world_size=gpus,
                  subset_size=per_gpu * gpus)
    gpu = pd.read_csv(GPU_RUN / "gpu_memory.csv", skipinitialspace=True, dtype=str)
    column = "memory.used [MiB]"
    used = gpu[column].str.extract(r"(\d+)", expand=False).astype(float)
    copies = [gpu.assign(**{"index": str(k), column: (used * memory_scale * (1 - 0.1 * k)).round().astype(int)
                            .astype(str) + " MiB"}) for k in range(gpus)]
    pd.concat(copies).to_csv(run / "gpu_memory.csv", index=False)
    return run


def per_gpu_stats(run):
    """(peak of the busiest GPU, mean over GPUs of each GPU's mean), read back with the lesson's parser."""
    used = read_gpu_csv(run / "gpu_memory.csv").data.groupby("index")["memory_used_mib"]
    return used.max().max(), used.mean().mean()


def zero_sweep(dest, skip=()):
    """The six 2-GPU configs; offload uses 60% of the GPU memory of its stage and takes 1.5x as long."""
    runs = {}
    for config in ZERO_2GPU:
        if config in skip:
            continue
        offload = config.endswith("_offload")
        runs[config] = lesson3_run(dest, f"{config}_2gpu-{len(runs) + 100}", config, 2,
                                   memory_scale=0.6 if offload else 1.0)
        if offload:
            set_train_runtime(runs[config], summary(runs[config])["train_runtime"] * 1.5)
    return runs


def summary(run):
    return final_summary(events(run))


def test_zero_table_holds_the_ten_measurements_of_each_config(tmp_path):
    runs = zero_sweep(tmp_path)
    lesson3_run(tmp_path, "weak_scaling_2gpu-1", "stage0", 2)  # a weak-scaling run: not a row here
    tables = build_tables([tmp_path], by_run=True)
    rows = rows_by_config(tables[ZERO])
    assert list(rows) == list(ZERO_2GPU)
    for config, row in rows.items():
        run, facts = runs[config], manifest(runs[config])
        done, last_eval = summary(run), [e for e in events(run) if "eval_loss" in e][-1]
        assert (row["run"], row["GPUs (processes)"], row["samples per GPU"]) == (run.name, 2, 20)
        assert row[RUNTIME] == done["train_runtime"]
        assert row["train samples/s"] == done["train_samples_per_second"]
        assert row["train steps/s"] == done["train_steps_per_second"]
        assert row["train_loss (run mean)"] == done["train_loss"]
        assert row["eval loss (last eval)"] == last_eval["eval_loss"]
        assert row["eval samples/s (last eval)"] == last_eval["eval_samples_per_second"]
        assert (row[PEAK], row[MEAN]) == pytest.approx(per_gpu_stats(run))
        assert row["torch max reserved MiB"] == facts["peak_memory"]["cuda_max_reserved_mib"]
        assert row["peak CPU MiB (psrecord)"] == read_psrecord(run / "cpu_memory.log").data["real_mib"].max()
    assert list(tables[WEAK]["run"]) == ["weak_scaling_2gpu-1"]  # and no ZeRO run among the weak-scaling rows
    lowest = min(rows.values(), key=lambda row: row[PEAK])
    # the by-run view shows the handout layout's answers, which name configs as the handout does
    assert any(f"lowest peak GPU memory: {config_label(lowest['config'])} at" in a for a in tables[ZERO].attrs["answers"])


def test_savings_follow_the_stated_formulas(tmp_path):
    zero_sweep(tmp_path)
    tables = build_tables([tmp_path], by_run=True)
    rows = rows_by_config(tables[ZERO])
    savings = tables[SAVINGS].set_index("stage")
    assert list(savings.index) == ["stage1", "stage2", "stage3"]
    for stage, row in savings.iterrows():
        plain, offload = rows[stage], rows[f"{stage}_offload"]
        assert row["GPU memory saving % (peak per GPU)"] == pytest.approx(
            (plain[PEAK] - offload[PEAK]) / plain[PEAK] * 100, abs=0.05)
        assert row["runtime change % (train_runtime)"] == pytest.approx(
            (offload[RUNTIME] - plain[RUNTIME]) / plain[RUNTIME] * 100, abs=0.05)
    notes = " ".join(tables[SAVINGS].attrs["notes"])
    assert "(no-offload - offload) / no-offload x 100" in notes and "(offload - no-offload) / no-offload x 100" in notes


def test_missing_runs_and_values_say_why(tmp_path):
    runs = zero_sweep(tmp_path, skip=("stage3_offload",))
    (runs["stage2"] / "gpu_memory.csv").write_text("# no GPU: CUDA_VISIBLE_DEVICES is empty\n")
    tables = build_tables([tmp_path], by_run=True)
    savings = tables[SAVINGS].set_index("stage")
    assert savings.loc["stage3", "GPU memory saving % (peak per GPU)"] == "n/a (no stage3_offload run)"
    assert savings.loc["stage2", "GPU memory saving % (peak per GPU)"] == "n/a (stage2: n/a (no GPU))"
    assert isinstance(savings.loc["stage2", "runtime change % (train_runtime)"], float)  # the runtimes still compare
    assert any("stage3_offload" in note and "submit_zero_2gpu.sh" in note for note in tables[ZERO].attrs["notes"])
    assert "n/a (no stage3_offload run)" in render(tables, "markdown")


@pytest.mark.parametrize("scale, verdict", [(1.0, "yes, about constant"), (1.3, "no, it grows")])
def test_weak_scaling_answers_the_constant_memory_quiz_from_the_numbers(tmp_path, scale, verdict):
    two = lesson3_run(tmp_path, "weak_scaling_2gpu-1", "stage0", 2)
    four = lesson3_run(tmp_path, "weak_scaling_4gpu-2", "stage0", 4, memory_scale=scale)
    table = build_tables([tmp_path], by_run=True)[WEAK]
    assert list(table["GPUs (processes)"]) == [2, 4]
    (quiz,) = [a for a in table.attrs["answers"] if "is peak GPU memory per GPU (nvidia-smi) constant" in a]
    assert verdict in quiz
    (peak2, _), (peak4, _) = per_gpu_stats(two), per_gpu_stats(four)
    assert f"{peak2:.0f} MiB at 2, {peak4:.0f} MiB at 4" in quiz


def test_constant_memory_quiz_needs_two_gpu_counts(tmp_path):
    lesson3_run(tmp_path, "weak_scaling_2gpu-1", "stage0", 2)
    (quiz,) = build_tables([tmp_path], by_run=True)[WEAK].attrs["answers"]
    assert "not answerable yet" in quiz and "submit_weak_scaling.sh" in quiz


def lines(fig):
    return [line for ax in fig.axes for line in ax.lines if len(line.get_xdata())]


def test_lesson3_figures_plot_the_table_numbers(tmp_path):
    zero_sweep(tmp_path / "zero")
    for gpus in (2, 4):
        lesson3_run(tmp_path / "weak", f"weak_scaling_{gpus}gpu-{gpus}", "stage0", gpus, memory_scale=gpus / 2)
    weak, zero = build_tables([tmp_path / "weak"], by_run=True)[WEAK], build_tables([tmp_path / "zero"], by_run=True)[ZERO]
    for fig in (plots.scaling_throughput(weak), plots.memory_per_gpu(weak), plots.zero_tradeoff(zero)):
        assert isinstance(fig, Figure)
        fig.savefig(tmp_path / "figure.png")

    measured, ideal = lines(plots.scaling_throughput(weak))
    assert list(measured.get_ydata()) == list(weak["train samples/s"])
    rate = weak["train samples/s"].iloc[0]
    assert list(ideal.get_ydata()) == pytest.approx([rate, 2 * rate])  # linear from the fewest-GPU run
    peak, mean = lines(plots.memory_per_gpu(weak))
    assert (list(peak.get_ydata()), list(mean.get_ydata())) == (list(weak[PEAK]), list(weak[MEAN]))
    points = {line.get_label(): (line.get_xdata()[0], line.get_ydata()[0]) for line in lines(plots.zero_tradeoff(zero))}
    assert points == {config_label(row["config"]): (row[RUNTIME], row[PEAK]) for row in zero.to_dict("records")}


def test_lesson3_figures_without_runs():
    for fig in (plots.scaling_throughput(None), plots.memory_per_gpu(None), plots.zero_tradeoff(None)):
        assert not lines(fig)
        assert any("no runs" in text.get_text() for text in fig.axes[0].texts)
