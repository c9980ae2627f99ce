"""fill_tables in the handout's own shapes, from the handout's own logs.

Every expected header and row label is parsed from the handout itself (/work/shared/seeds/workshop-text.md, or
$WORKSHOP_TEXT), so the tests check fill_tables against the text a student fills in, not against a copy of it.
Runs are the real captured ones under tests/data/logs (an H100 run, transformers 4.x and 5.x stdout), renamed
and laid out as the handout's scripts name their files; DeepSpeed's start-up print is made by DeepSpeed itself.
"""

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from test_fill_tables_multi import lesson3_run, zero_sweep
from workshop.fill_tables import build_tables, render
from workshop.logparse import final_summary, read_log_history
from workshop.monitor_logs import read_gpu_csv, read_psrecord

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "logs"
GPU_RUN = DATA / "run_complete" / "baseline-1001"
HANDOUT = Path(os.environ.get("WORKSHOP_TEXT", "/work/shared/seeds/workshop-text.md"))
pytestmark = pytest.mark.skipif(not HANDOUT.is_file(), reason=f"the workshop text {HANDOUT} is not on this machine")


def unmangle(text):
    """The handout file was saved through a Mac Roman round trip ('Δ' reads 'Œî'): undo it where it applies."""
    try:
        return text.encode("mac_roman").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def handout_tables():
    """[(header cells, first-column labels)] of every table in the handout, bold markers stripped."""
    tables, block = [], []
    for line in HANDOUT.read_text(encoding="utf-8").split("\n") + [""]:
        if line.lstrip().startswith("|"):
            block.append([unmangle(c.strip().strip("*").strip()) for c in line.strip().strip("|").split("|")])
            continue
        if block:
            tables.append((block[0], [row[0] for row in block[2:] if row and row[0]]))
            block = []
    return tables


def handout_table(first_header, second_header):
    (found,) = [t for t in handout_tables() if t[0][:2] == [first_header, second_header]]
    return found


def edit_manifest(run, **changes):
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, **changes}))


def lesson2_run(dest, config, name=None, runtime_scale=1.0, **changes):
    """The H100 run as a lesson-2 run of `config` (its train_runtime scaled, to tell configs apart)."""
    run = shutil.copytree(GPU_RUN, dest / (name or f"{config}-{len(list(dest.iterdir())) + 1000}"))
    edit_manifest(run, run_id=run.name, lesson="deepspeed_single_gpu", config_name=config,
                  deepspeed_config=f"deepspeed_single_gpu/configs/{config}.json", **changes)
    lines = (run / "log_history.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    for event in events:
        if "train_runtime" in event and "loss" not in event:
            event["train_runtime"] = round(event["train_runtime"] * runtime_scale, 4)
    (run / "log_history.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    return run


def runtime(run):
    return final_summary(read_log_history(run / "log_history.jsonl").data)["train_runtime"]


def number(text):
    return float(re.search(r"[-+]?\d+(?:\.\d+)?", text).group())


# ---------------------------------------------------------------------------------------------- shapes

def test_objectives_1_and_2_have_the_handouts_rows_filled_from_the_run(tmp_path):
    shutil.copytree(GPU_RUN, tmp_path / GPU_RUN.name)
    tables = build_tables([tmp_path])
    for key, (header, labels) in (("baseline_objective_1", handout_table("Metric", "Your Value")),
                                  ("baseline_objective_2", handout_table("Metric", "Your Value (MiB)"))):
        df = tables[key]
        assert list(df.columns) == header and list(df["Metric"]) == labels
    one = dict(zip(tables["baseline_objective_1"]["Metric"], tables["baseline_objective_1"]["Your Value"]))
    events = read_log_history(GPU_RUN / "log_history.jsonl").data
    assert one["Train Loss (Final)"] == final_summary(events)["train_loss"]
    assert one["Eval Loss (Epoch 1)"] == [e for e in events if "eval_loss" in e][0]["eval_loss"]
    two = dict(zip(tables["baseline_objective_2"]["Metric"], tables["baseline_objective_2"]["Your Value (MiB)"]))
    used = read_gpu_csv(GPU_RUN / "gpu_memory.csv").data["memory_used_mib"]
    assert (two["Peak GPU Memory Usage"], two["Minimum GPU Memory Usage"]) == (used.max(), used.min())
    assert two["Mean GPU Memory Usage"] == pytest.approx(used.mean())


def test_part1_and_part2_have_the_handouts_columns_and_computed_quiz_answers(tmp_path):
    pin = lesson2_run(tmp_path, "stage2_offload")
    nopin = lesson2_run(tmp_path, "stage2_offload_nopin", runtime_scale=1.25)
    lesson2_run(tmp_path, "stage2", runtime_scale=0.5)
    tables = build_tables([tmp_path])
    part1 = tables["deepspeed_single_gpu_part1"]
    header, labels = handout_table("Model and Data", "Pinned Memory")
    assert list(part1.columns) == header
    # The handout's rows name the model and data the same way ("Bloom 560M, 500 subset") and the pin setting.
    handout_rows = [row for row in handout_tables() if row[0] == header][0]
    assert all(re.fullmatch(r"Bloom [\w.]+( \(random init\))?, \d+ subset", label) for label in part1["Model and Data"])
    assert labels[0].startswith("Bloom ") and handout_rows
    assert list(part1["Pinned Memory"]) == ["`pin_memory: true`", "`pin_memory: false`"]
    assert list(part1["Total Runtime"]) == [runtime(pin), runtime(nopin)]
    (answer,) = part1.attrs["answers"]
    cells = dict(zip(part1["Pinned Memory"], part1["Total Runtime"]))
    saved = cells["`pin_memory: false`"] - cells["`pin_memory: true`"]
    assert "yes" in answer and f"{saved:.1f} s shorter" in answer
    assert f"({-saved / cells['`pin_memory: false`'] * 100:+.1f}%)" in answer

    part2 = tables["deepspeed_single_gpu_part2"]
    assert list(part2.columns) == handout_table("Model and Data", "DeepSpeed Config")[0]
    assert list(part2["DeepSpeed Config"]) == ["Stage 2", "Stage 2 + offload", "Stage 2 + offload (no pin)"]
    lowest, *offload = part2.attrs["answers"]
    peaks = dict(zip(part2["DeepSpeed Config"], part2["Peak GPU Memory Used (MiB)"]))
    best = min(peaks, key=peaks.get)
    assert lowest.startswith("1. ") and f"{best} at {peaks[best]:.0f} MiB" in lowest
    times = dict(zip(part2["DeepSpeed Config"], part2["Total RunTime"]))
    assert f"{times['Stage 2 + offload'] - times['Stage 2']:.1f} s longer" in offload[0]
    assert len(offload) == 1  # not Stage 2 vs "+ offload (no pin)": that pair differs in pinning too


def test_truncated_runtime_says_how_many_steps_it_took(tmp_path):
    # The manifest fields issue 11 writes: a run stopped by --max-steps after 20 of the lesson's 1,875 steps.
    run = lesson2_run(tmp_path, "stage3", steps_done=20, steps_planned=1875)
    (cell,) = build_tables([tmp_path])["deepspeed_single_gpu_part2"]["Total RunTime"]
    whole = runtime(run) / 20 * 1875  # labelled as an extrapolation, never the cell's number
    assert cell == f"{runtime(run):.1f} s (20 of 1,875 steps; all ≈ {whole:,.0f} s extrapolated)"


def test_lesson3_tables_have_the_handouts_rows_and_columns(tmp_path):
    for gpus in (2, 4):
        lesson3_run(tmp_path / "weak", f"weak_scaling_{gpus}gpu-{gpus}", "stage0", gpus)
    zero_sweep(tmp_path / "zero")
    tables = {**build_tables([tmp_path / "weak"]), **build_tables([tmp_path / "zero"])}
    weak, zero, savings = (tables[k] for k in ("deepspeed_multi_gpu_weak_scaling", "deepspeed_multi_gpu_zero_2gpu",
                                               "deepspeed_multi_gpu_zero_savings"))
    for df, (header, labels) in ((weak, handout_table("Metric", "2 GPUs")), (zero, handout_table("Metric", "Stage 1")),
                                 (savings, handout_table("Stage", "GPU Mem (No Offload)"))):
        assert list(df.columns) == header
        assert list(df.iloc[:, 0]) == labels
    assert list(weak["6 GPUs"]) == ["not run yet"] * len(weak)  # the handout's column, not run
    by_metric = dict(zip(weak["Metric"], weak["4 GPUs"]))
    assert isinstance(by_metric["Train Runtime (sec)"], float) and isinstance(by_metric["Peak GPU Memory (MiB)"], float)
    # The savings formulas of the handout, recomputed from the table's own cells.
    for _, row in savings.iterrows():
        assert row["Mem Savings (%)"] == pytest.approx(
            (row["GPU Mem (No Offload)"] - row["GPU Mem (Offload)"]) / row["GPU Mem (No Offload)"] * 100, abs=0.051)
        assert row["Runtime Δ (%)"] == pytest.approx(
            (row["Train Runtime (Offload)"] - row["Train Runtime (No Offload)"]) / row["Train Runtime (No Offload)"]
            * 100, abs=0.051)
    # The 2-GPU quiz: offloading's runtime and samples/s change, from the cells of the ZeRO table.
    cells = {metric: values for metric, *values in zero.itertuples(index=False)}
    columns = list(zero.columns[1:])
    for stage, answer in zip((1, 2, 3), zero.attrs["answers"]):
        plain, off = columns.index(f"Stage {stage}"), columns.index(f"Stage {stage} + offload")
        change = (cells["Train Runtime (sec)"][off] - cells["Train Runtime (sec)"][plain]) \
            / cells["Train Runtime (sec)"][plain] * 100
        assert f"train runtime by {change:+.1f}%" in answer
    # Weak scaling's quiz: constant peak memory per GPU, from the two GPU counts' cells.
    (quiz,) = weak.attrs["answers"]
    assert "constant" in quiz and f"{by_metric['Peak GPU Memory (MiB)']:.0f} MiB at 4" in quiz


# ---------------------------------------------------------------------------------------------- the handout's logs

def cut_mid_line(text):
    """A psrecord log as a killed job leaves it: the last sample half-written."""
    return text[: text.rindex("\n", 0, len(text) - 1) + 12]


def test_handout_named_logs_pair_by_job_id_and_by_name(tmp_path):
    # Two jobs in one folder, named as the handout's scripts name them.
    shutil.copy(GPU_RUN / "train.out", tmp_path / "baseline-1001.out")
    shutil.copy(GPU_RUN / "gpu_memory.csv", tmp_path / "baseline-single-gpu_memory_log1001.csv")
    (tmp_path / "deepspeed-cpu-offloading-data-finetune1001.txt").write_text(
        cut_mid_line((GPU_RUN / "cpu_memory.log").read_text()))
    shutil.copy(DATA / "stdout_4x" / "baseline-4242.out", tmp_path / "baseline-4242.out")
    (tmp_path / "other").mkdir()  # by name: the CSV has no job id, the .out's name without its id matches
    shutil.copy(DATA / "stdout_5x" / "baseline-5151.out", tmp_path / "other" / "baseline-500-1gpu-5151.out")
    (tmp_path / "other" / "baseline-500-1gpu_memory_log.csv").write_text(  # hand-written, 3 samples
        (GPU_RUN / "gpu_memory.csv").read_text().split("\n")[0] + "\n" + "".join(
            f"2026/11/25 12:27:0{i}.000, 0, NVIDIA H100 80GB HBM3, {mib} MiB, 81559 MiB, 0 %, 100 W, 40\n"
            for i, mib in enumerate((0, 500, 1000))))
    by_run = build_tables([tmp_path], by_run=True)["baseline_objective_2"].set_index("run")
    used = read_gpu_csv(GPU_RUN / "gpu_memory.csv").data["memory_used_mib"]
    assert by_run.loc["baseline-1001", "GPU MiB peak"] == used.max()
    psrecord = read_psrecord(tmp_path / "deepspeed-cpu-offloading-data-finetune1001.txt")
    assert psrecord.bad_lines  # the cut line is skipped, the rest counts
    assert by_run.loc["baseline-1001", "host RSS MiB peak (psrecord)"] == psrecord.data["real_mib"].max()
    assert by_run.loc["baseline-4242", "GPU MiB peak"] == "n/a (no nvidia-smi CSV)"
    assert by_run.loc["baseline-500-1gpu-5151", "GPU MiB peak"] == 1000.0
    notes = build_tables([tmp_path], by_run=True)["baseline_objective_2"].attrs["notes"]
    assert any("baseline-500-1gpu_memory_log.csv paired with baseline-500-1gpu-5151.out by name" in n for n in notes)


def test_a_single_nvidia_smi_csv_fills_objective_2(tmp_path):
    csv = shutil.copy(GPU_RUN / "gpu_memory.csv", tmp_path / "baseline-single-gpu_memory_log.csv")
    df = build_tables([csv])["baseline_objective_2"]
    used = read_gpu_csv(csv).data["memory_used_mib"]
    assert list(df["Your Value (MiB)"])[0] == used.max()
    assert build_tables([csv]).keys() == {"baseline_objective_1", "baseline_objective_2"}
    one = build_tables([csv])["baseline_objective_1"]
    assert set(one["Your Value"]) == {"n/a (memory log only)"}


def deepspeed_startup_print(config_name):
    """What DeepSpeed's engine prints at start-up for one of the lesson's configs, printed by DeepSpeed."""
    from deepspeed.runtime.config import DeepSpeedConfig
    from deepspeed.utils import logger

    def resolve(value):  # the Trainer fills "auto"; any number does for DeepSpeed's print
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        return 1 if value == "auto" else value

    config = json.loads((REPO / "deepspeed_single_gpu" / "configs" / f"{config_name}.json").read_text())

    config = {k: v for k, v in resolve(config).items() if k not in ("fp16", "bf16")}
    config.update(train_batch_size=16, train_micro_batch_size_per_gpu=4, gradient_accumulation_steps=4)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] [%(filename)s:%(lineno)d:%(funcName)s] "
                                           "%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        DeepSpeedConfig(config).print("DeepSpeedEngine configuration")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return stream.getvalue()


@pytest.mark.parametrize("config", ["stage2_offload_nopin", "stage3"])
def test_a_bare_deepspeed_out_is_classified_by_the_config_it_printed(tmp_path, config):
    startup = deepspeed_startup_print(config)
    assert "zero_config" in startup
    # A SLURM .out named after the job, not the config: only DeepSpeed's own print says what it ran.
    (tmp_path / "deepspeed-77.out").write_text(startup + (GPU_RUN / "train.out").read_text())
    tables = build_tables([tmp_path], by_run=True)
    assert "baseline_objective_1" not in tables
    assert list(tables["deepspeed_single_gpu_part2"]["config"]) == [config]
    notes = tables["deepspeed_single_gpu_part2"].attrs["notes"]
    assert any(f"classified as {config}" in note for note in notes)


def test_a_bare_two_process_deepspeed_out_lands_in_lesson_3(tmp_path):
    # The deepspeed launcher's line for two ranks (its format, written by hand), then rank 0's start-up print.
    launcher = "[2026-12-01 10:00:00,000] [INFO] [launch.py:163:main] dist_world_size=2\n"
    startup = deepspeed_startup_print("stage2")
    (tmp_path / "zero-88.out").write_text(launcher + startup + (GPU_RUN / "train.out").read_text())
    tables = build_tables([tmp_path], by_run=True)
    assert [key for key in tables if key.startswith(("baseline", "deepspeed_single_gpu"))] == []
    row = tables["deepspeed_multi_gpu_zero_2gpu"].iloc[0]
    assert (row["config"], row["GPUs (processes)"]) == ("stage2", 2)


# ---------------------------------------------------------------------------------------------- notes and output

def test_notes_say_each_cause_once_and_name_its_runs(tmp_path):
    configs = ["stage1", "stage1_offload", "stage2", "stage2_offload", "stage3"]
    names = [f"{config}-{300 + n}" for n, config in enumerate(configs)]
    for config, name in zip(configs, names):
        lesson2_run(tmp_path, config, name=name)
        (tmp_path / name / "gpu_memory.csv").write_text("# no GPU: nvidia-smi not found\n")
    notes = build_tables([tmp_path], by_run=True)["deepspeed_single_gpu_part2"].attrs["notes"]
    no_gpu = [note for note in notes if "no GPU was monitored" in note]
    assert len(no_gpu) == 1 and no_gpu[0].endswith(f"(runs: {', '.join(names)})")
    assert len(notes) == len(set(notes))


def test_markdown_renders_and_single_run_tables_fit_120_columns(tmp_path):
    shutil.copytree(GPU_RUN, tmp_path / GPU_RUN.name)
    lesson2_run(tmp_path, "stage2_offload")
    lesson2_run(tmp_path, "stage2_offload_nopin")
    tables = build_tables([tmp_path])
    text = render(tables, "markdown")
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    headers = [tokens[i + 1].content for i, token in enumerate(tokens) if token.type == "th_open"]
    assert sum(t.type == "table_open" for t in tokens) == len(tables)
    for df in tables.values():
        assert [c for c in df.columns if c not in headers] == []  # every header cell parsed as a table header
    for key in ("baseline_objective_1", "baseline_objective_2"):
        block = text.split(f"## {tables[key].attrs['title']}\n")[1].split("\n\n")[1]
        assert max(map(len, block.splitlines())) <= 120, block


def test_cli_prints_the_handouts_shapes_by_default_and_per_run_on_request(tmp_path):
    shutil.copytree(GPU_RUN, tmp_path / GPU_RUN.name)
    def run(*args):
        return subprocess.run([sys.executable, "-m", "workshop.fill_tables", str(tmp_path), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    shaped, by_run = run("--format", "json"), run("--format", "json", "--by-run")
    assert shaped.returncode == by_run.returncode == 0
    rows = json.loads(shaped.stdout)["baseline_objective_1"]["rows"]
    assert [row["Metric"] for row in rows] == handout_table("Metric", "Your Value")[1]
    assert [row["run"] for row in json.loads(by_run.stdout)["baseline_objective_1"]["rows"]] == ["baseline-1001"]


def test_preflight_estimate_beside_the_measured_peak(tmp_path):
    # The manifest fields issue 11 writes, on a copy of the real H100 run's manifest.
    run = lesson2_run(tmp_path, "stage2", preflight={"gpu_gib": 8.0, "host_gib": 0.25, "host_limit_gib": 64.0,
                                                     "source": "workshop.estimate"},
                      gpu_memory_limit={"gib": 80.0, "emulates": "H100 80GB"})
    lesson2_run(tmp_path, "stage3")  # made before preflight existed: no comparison column
    df = build_tables([tmp_path], by_run=True)["deepspeed_single_gpu_part2"].set_index("config")
    gpu = read_gpu_csv(run / "gpu_memory.csv").data["memory_used_mib"].max() / 1024
    host = read_psrecord(run / "cpu_memory.log").data["real_mib"].max() / 1024
    assert df.loc["stage2", "GPU GiB: estimate vs measured"] == \
        f"8.00 GiB est. vs {gpu:.2f} GiB measured ({(8.0 - gpu) / gpu * 100:+.1f}%)"
    assert df.loc["stage2", "host GiB: estimate vs measured"].startswith(f"0.25 GiB est. vs {host:.2f} GiB measured")
    assert df.loc["stage3", "GPU GiB: estimate vs measured"] == "—"
    notes = build_tables([tmp_path], by_run=True)["deepspeed_single_gpu_part2"].attrs["notes"]
    assert f"{run.name}: GPU memory capped at 80 GiB, emulating H100 80GB" in notes


def test_latest_run_with_values_fills_objective_2(tmp_path):
    # A later job without its nvidia-smi log does not hide the earlier job's numbers; the notes say which filled it.
    shutil.copy(GPU_RUN / "train.out", tmp_path / "baseline-1001.out")
    shutil.copy(GPU_RUN / "gpu_memory.csv", tmp_path / "baseline-single-gpu_memory_log1001.csv")
    shutil.copy(DATA / "stdout_4x" / "baseline-4242.out", tmp_path)
    tables = build_tables([tmp_path])
    assert tables["baseline_objective_2"]["Your Value (MiB)"][0] == read_gpu_csv(GPU_RUN / "gpu_memory.csv").data[
        "memory_used_mib"].max()
    assert tables["baseline_objective_2"].attrs["notes"][0].startswith("the cells are from baseline-1001, the latest "
                                                                       "completed run with these values; 1 other run")
    # Objective 1: both have every value, so the later job (the larger job id) fills it.
    assert tables["baseline_objective_1"].attrs["notes"][0].startswith(
        "the cells are from baseline-4242, the latest completed run; 1 other run exists: baseline-1001")


def test_part2_lists_models_smallest_first_on_the_committed_h200_runs():
    """The H200 sweep (docs/results) holds bloom-560m, -1b7, -3b and -7b1 runs: Part 2 lists them by parameter
    count as the manifests recorded it (560M before 1B7), each model's configs in the lesson's order."""
    from workshop.lessons import deepspeed_single_gpu as lesson

    runs = REPO / "docs/results/zero_single_gpu_h200-2026-12-01/runs"
    sizes = {}
    for manifest in runs.glob("*/manifest.json"):
        facts = json.loads(manifest.read_text())
        if facts.get("parameters"):
            sizes[facts["model"]] = max(sizes.get(facts["model"], 0), facts["parameters"])
    assert len(sizes) >= 3, sizes
    shown = build_tables([runs])["deepspeed_single_gpu_part2"]
    models = list(dict.fromkeys(by_run_model for by_run_model in shown.attrs["by_run"]["model"]))
    assert models == sorted(sizes, key=sizes.get)
    for model in models:
        configs = list(shown.attrs["by_run"].query("model == @model")["config"])
        assert configs == sorted(configs, key=list(lesson.CONFIGS).index)
