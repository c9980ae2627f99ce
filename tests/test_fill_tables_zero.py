"""Lesson 2's tables (fill_tables Part 1 and Part 2) and figures (plots.zero_*) on real run folders.

Two real tiny runs, made once for the module through the lesson's own .slurm files (stage2_offload and
stage2_offload_nopin, one epoch each); every other case is a copy of those folders with one thing changed,
so each test shows what it changed. Expected values are read from the run files, never typed in.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import made_once
from workshop import fill_tables, plots
from workshop.deepspeed.estimate import estimate_table
from workshop.report.columns import STEADY_STEP
from workshop.fill_tables import build_tables, render
from workshop.logparse import final_summary, is_summary
from workshop.monitor_logs import read_gpu_csv, read_psrecord
from workshop.report.zero import config_label, memory_basis

REPO = Path(__file__).resolve().parents[1]
GPU_DATA = Path(__file__).parent / "data" / "logs"
H100_CSV = GPU_DATA / "gpu" / "h100_real.csv"  # real nvidia-smi samples of an H100
H100_MANIFEST = GPU_DATA / "run_complete" / "baseline-1001" / "manifest.json"  # that run's torch peaks
PIN, NOPIN = "stage2_offload", "stage2_offload_nopin"
PART1, PART2 = "deepspeed_single_gpu_part1", "deepspeed_single_gpu_part2"
RUNTIME = "total runtime s (train_runtime)"

def part1_logs(tmp_path_factory):
    """logs/ holding one real tiny run of each Part 1 config, run by the .slurm files (via plots.ensure_configs)
    with notebook 02's own arguments: made once per session, so tests/test_notebooks.py executes the notebook on
    them instead of training both configs again."""
    def make(folder):
        runs = plots.ensure_configs(folder / "logs", [PIN, NOPIN], ["--profile", "tiny", "--num-train-epochs", "1"])
        assert sorted(fill_tables.config_of(run) for run in runs) == [PIN, NOPIN]
        assert all(run.status == "completed" for run in runs), [(run.name, run.status) for run in runs]
        assert not any((REPO / "logs" / run.name).exists() for run in runs)  # moved out of the repo's logs/

    return made_once(tmp_path_factory, "zero_part1", make) / "logs"


@pytest.fixture(scope="module")
def real_logs(tmp_path_factory):
    return part1_logs(tmp_path_factory)


def run_of(logs, config):
    (path,) = [p for p in logs.iterdir() if p.name.startswith(config + "-")]
    return path


def copy_run(logs, config, dest, name=None, **manifest_changes):
    """A copy of the real `config` run under dest/, renamed `name` (its run_id), with manifest changes."""
    name = name or run_of(logs, config).name
    run = shutil.copytree(run_of(logs, config), dest / name)
    edit_manifest(run, run_id=name, **manifest_changes)
    return run


def manifest(run):
    return json.loads((run / "manifest.json").read_text())


def edit_manifest(run, **changes):
    (run / "manifest.json").write_text(json.dumps({**manifest(run), **changes}))


def on_cpu(run):
    return not manifest(run)["peak_memory"]["device"].startswith("cuda")


def events(run):
    return [json.loads(line) for line in (run / "log_history.jsonl").read_text().splitlines()]


def train_runtime(run):
    return final_summary(events(run))["train_runtime"]


def set_train_runtime(run, seconds):
    lines = [{**e, "train_runtime": seconds} if is_summary(e) else e for e in events(run)]
    (run / "log_history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))


def rows_by_config(df):
    return {row["config"]: row for row in df.to_dict("records")}


def percent_in(answer):
    return float(re.search(r"\(([+-][0-9.]+)%\)", answer).group(1))


# ---------------------------------------------------------------------------------------------- Part 1

@pytest.mark.slow
def test_part1_rows_are_the_real_measurements(real_logs):
    tables = build_tables([real_logs], by_run=True)
    rows = rows_by_config(tables[PART1])
    assert list(rows) == [PIN, NOPIN]
    for config, row in rows.items():
        run = run_of(real_logs, config)
        facts = manifest(run)
        assert (row["model"], row["init"], row["subset"]) == (facts["model"], facts["init"], str(facts["subset_size"]))
        assert row["run"] == run.name and row["status"] == "completed"
        assert row[RUNTIME] == train_runtime(run)
        assert row["wall s (manifest)"] == facts["wall_seconds"]
        assert row["peak CPU MiB (psrecord)"] == read_psrecord(run / "cpu_memory.log").data["real_mib"].max()
        gpu = read_gpu_csv(run / "gpu_memory.csv")
        if getattr(gpu, "cell", None) == "n/a (no GPU)":  # this machine has no GPU: say so, and why, in the notes
            assert row["peak GPU MiB (nvidia-smi)"] == row["torch max reserved MiB"] == "n/a (no GPU)"
            assert any(run.name in note and "no GPU" in note for note in tables[PART1].attrs["notes"])
        else:
            assert row["peak GPU MiB (nvidia-smi)"] == gpu.data["memory_used_mib"].max()
            assert row["torch max reserved MiB"] == facts["peak_memory"]["cuda_max_reserved_mib"]

    (answer,) = tables[PART1].attrs["answers"]  # the handout layout's answer, shown in the by-run view too
    pin, nopin = rows[PIN], rows[NOPIN]
    assert f"whole runs {pin[RUNTIME]:.1f} s pinned vs {nopin[RUNTIME]:.1f} s not" in answer
    if on_cpu(run_of(real_logs, PIN)):  # nothing to pin for: whatever the timings did, no verdict
        assert answer.split("? ")[1].startswith("not on a CPU: `pin_memory` page-locks"), answer
        assert "notebook 02" in answer and "; measured: " in answer
    elif "no measurable difference" not in answer:  # the steady intervals are apart: the verdict is theirs
        # (this CPU decides which branch runs; CI of 2026-12-06 found the intervals apart once in several runs)
        pinned, unpinned = pin[STEADY_STEP].value, nopin[STEADY_STEP].value
        assert answer.split("? ")[1].startswith("yes:" if pinned < unpinned else "no:"), answer
        by = float(re.search(r"by ([0-9.]+)% \(", answer).group(1))  # unsigned: the word says the direction
        assert by == pytest.approx(abs(pinned - unpinned) / unpinned * 100, abs=0.05)
        assert f"pinned {'lower' if pinned < unpinned else 'higher'} seconds per step" in answer


@pytest.mark.slow
def test_part1_answer_follows_the_runtimes(real_logs, tmp_path):
    pin = copy_run(real_logs, PIN, tmp_path)
    nopin = copy_run(real_logs, NOPIN, tmp_path)
    base = train_runtime(pin)
    if on_cpu(pin):  # runs on a CPU get no verdict, even from runtimes 1.5x apart; as GPU runs they do
        set_train_runtime(nopin, base * 1.5)
        (answer,) = build_tables([tmp_path], by_run=True)[PART1].attrs["answers"]
        assert "? not on a CPU:" in answer and "yes" not in answer and "no:" not in answer, answer
        for path in (pin, nopin):
            edit_manifest(path, peak_memory={**manifest(path)["peak_memory"], "device": "cuda:0"})
    for path in (pin, nopin):  # whole-run runtimes only: the answer compares them and says it has no spread
        (path / "steps.jsonl").unlink(missing_ok=True)
    set_train_runtime(nopin, base * 1.5)
    (answer,) = build_tables([tmp_path], by_run=True)[PART1].attrs["answers"]
    assert percent_in(answer) == pytest.approx(-100 / 3, abs=0.05) and "yes" in answer and "shorter" in answer
    assert "no spread to judge the difference against" in answer

    set_train_runtime(nopin, base * 0.8)
    (answer,) = build_tables([tmp_path], by_run=True)[PART1].attrs["answers"]
    assert percent_in(answer) == pytest.approx(25.0) and "no:" in answer and "longer" in answer

    # per-step times whose intervals are apart: the steady medians give the verdict and its percentage
    for path, seconds in ((pin, 0.30), (nopin, 0.60)):
        (path / "steps.jsonl").write_text("".join(
            json.dumps({"step": n, "seconds": seconds + 0.01 * (n % 3), "samples": 4}) + "\n" for n in range(1, 21)))
    (answer,) = build_tables([tmp_path], by_run=True)[PART1].attrs["answers"]
    assert answer.split("? ")[1].startswith("yes:") and "pinned lower" in answer, answer
    assert float(re.search(r"by ([0-9.]+)% \(", answer).group(1)) == pytest.approx(50.0, abs=1.7)
    assert "by -" not in answer  # "lower ... by -50%" said the direction twice

    shutil.rmtree(nopin)  # only one side: no comparison, and the answer says which is missing
    (answer,) = build_tables([tmp_path], by_run=True)[PART1].attrs["answers"]
    assert "not answerable yet" in answer and NOPIN in answer


@pytest.mark.slow
def test_latest_completed_run_is_used_and_the_others_noted(real_logs, tmp_path):
    start = manifest(run_of(real_logs, PIN))["start_time"]
    old = copy_run(real_logs, PIN, tmp_path, f"{PIN}-1", start_time=start.replace(start[:4], "2000"))
    new = copy_run(real_logs, PIN, tmp_path, f"{PIN}-2")
    crashed = copy_run(real_logs, PIN, tmp_path, f"{PIN}-3", status="failed",
                       start_time=start.replace(start[:4], "2999"))
    set_train_runtime(old, 1.0)
    set_train_runtime(new, 2.0)
    df = build_tables([tmp_path], by_run=True)[PART1]
    assert df["run"].tolist() == [new.name]
    assert df[RUNTIME].tolist() == [2.0]
    (note,) = [n for n in df.attrs["notes"] if "ignored" in n]
    assert "2 ignored" in note and old.name in note and crashed.name in note

    shutil.rmtree(new)
    shutil.rmtree(old)  # none completed: the latest run of any status still shows, as what it is
    assert build_tables([tmp_path], by_run=True)[PART1]["status"].tolist() == ["failed"]


# ---------------------------------------------------------------------------------------------- Part 2

def estimate_mib(model, config):
    table = estimate_table(model, [1])
    found = table[table["configs"].str.split(", ").map(lambda names: config in names) & (table["zero_init"] != "yes")]
    return found["gpu_gib_per_gpu"].iloc[0] * 1024


@pytest.mark.slow
def test_part2_second_model_and_estimates(real_logs, tmp_path):
    for config in (PIN, NOPIN):
        copy_run(real_logs, config, tmp_path)
        copy_run(real_logs, config, tmp_path, f"{config}-560m", model="bigscience/bloom-560m")
    df = build_tables([tmp_path], by_run=True)[PART2]
    assert sorted(zip(df["model"], df["config"])) == sorted(
        (model, config) for model in ("bloom-tiny", "bigscience/bloom-560m") for config in (PIN, NOPIN))
    for row in df.to_dict("records"):
        model = row["model"].split("/")[-1]
        assert row["DeepSpeed estimate MiB (model states)"] == pytest.approx(estimate_mib(model, row["config"]))
    answers = df.attrs["answers"]
    assert sum(" lowest " in a for a in answers) == 2  # one per model and data
    for answer in (a for a in answers if " lowest " in a):
        model = "bigscience/bloom-560m" if "Bloom 560M" in answer else "bloom-tiny"
        rows = df[df["model"] == model].to_dict("records")
        column, what = memory_basis(rows, "peak GPU MiB (nvidia-smi)")
        if "no GPU was measured" in what:  # no GPU here: the answer says which memory it compares
            lowest = min(rows, key=lambda row: row[column])
            assert f"lowest {what}: {config_label(lowest['config'])} at " in answer


@pytest.mark.slow
def test_part2_with_real_h100_samples(real_logs, tmp_path):
    """A run folder given the real H100 nvidia-smi log and that run's torch peaks: the GPU columns fill in,
    the remainder is measured minus estimated, and the lowest-peak answer switches to GPU memory."""
    h100_peaks = json.loads(H100_MANIFEST.read_text())["peak_memory"]
    for config in (PIN, NOPIN):
        run = copy_run(real_logs, config, tmp_path, peak_memory=h100_peaks)
        shutil.copy(H100_CSV, run / "gpu_memory.csv")
    header, *samples = H100_CSV.read_text().splitlines()
    halved = []  # nopin's GPU samples at half the memory: it must become the lowest peak
    for line in samples:
        fields = line.split(", ")
        fields[3] = f"{int(fields[3].split()[0]) // 2} MiB"
        halved.append(", ".join(fields))
    (run_of(tmp_path, NOPIN) / "gpu_memory.csv").write_text("\n".join([header, *halved]) + "\n")

    df = build_tables([tmp_path], by_run=True)[PART2]
    rows = rows_by_config(df)
    samples = read_gpu_csv(H100_CSV).data["memory_used_mib"]
    assert rows[PIN]["peak GPU MiB (nvidia-smi)"] == samples.max()
    for row in rows.values():
        assert row["torch max reserved MiB"] == h100_peaks["cuda_max_reserved_mib"]
        assert row["remainder MiB (reserved - estimate)"] == pytest.approx(
            h100_peaks["cuda_max_reserved_mib"] - estimate_mib("bloom-tiny", row["config"]))
    (lowest,) = [a for a in df.attrs["answers"] if " lowest " in a]
    assert "peak GPU memory" in lowest and "no GPU was measured" not in lowest
    assert rows[NOPIN]["peak GPU MiB (nvidia-smi)"] == samples.max() // 2
    assert f"lowest peak GPU memory: {config_label(NOPIN)} at {samples.max() // 2:.0f} MiB" in lowest


@pytest.mark.slow
def test_part2_offload_answer_per_stage(real_logs, tmp_path):
    offload = copy_run(real_logs, PIN, tmp_path)
    plain = copy_run(real_logs, PIN, tmp_path, "stage2-77", config_name="stage2",
                     deepspeed_config="deepspeed_single_gpu/configs/stage2.json")
    set_train_runtime(plain, train_runtime(offload) / 2)
    df = build_tables([tmp_path], by_run=True)[PART2]
    assert df["config"].tolist() == ["stage2", PIN]  # the lesson's order, not the folders'
    for path in (offload, plain):  # whole-run runtimes only (a steady state would gate the answer)
        (path / "steps.jsonl").unlink(missing_ok=True)
    df = build_tables([tmp_path], by_run=True)[PART2]
    (answer,) = [a for a in df.attrs["answers"] if "than Stage 2:" in a]
    assert f"{config_label(PIN)} took" in answer and percent_in(answer) == pytest.approx(100.0)
    assert PART1 in build_tables([tmp_path], by_run=True) and "stage2" not in build_tables([tmp_path], by_run=True)[PART1]["config"].tolist()

    # ZenFlow offloads too and compares with its stage; a run that stopped early (fewer steps) compares with nothing
    zenflow = copy_run(real_logs, PIN, tmp_path, "stage2_zenflow-78", config_name="stage2_zenflow",
                       deepspeed_config="deepspeed_single_gpu/configs/stage2_zenflow.json")
    set_train_runtime(zenflow, train_runtime(plain) * 3)
    answers = build_tables([tmp_path], by_run=True)[PART2].attrs["answers"]
    (answer,) = [a for a in answers if f"{config_label('stage2_zenflow')} took" in a]
    assert percent_in(answer) == pytest.approx(200.0)
    edit_manifest(zenflow, status="diverged", exit_code=5)
    answers = build_tables([tmp_path], by_run=True)[PART2].attrs["answers"]
    assert not [a for a in answers if config_label("stage2_zenflow") in a and "than Stage 2" in a]


@pytest.mark.slow
def test_damaged_and_missing_files_still_give_rows(real_logs, tmp_path):
    no_cpu = copy_run(real_logs, PIN, tmp_path)
    (no_cpu / "cpu_memory.log").unlink()
    cut = copy_run(real_logs, NOPIN, tmp_path)
    text = (cut / "log_history.jsonl").read_text()
    (cut / "log_history.jsonl").write_text(text[: len(text) - 40])  # killed mid-line: the summary is gone
    no_manifest = copy_run(real_logs, "stage2_offload", tmp_path, "stage3-5")  # name says which config
    (no_manifest / "manifest.json").unlink()

    tables = build_tables([tmp_path], by_run=True)
    part1 = rows_by_config(tables[PART1])
    assert part1[PIN]["peak CPU MiB (psrecord)"] == "missing (cpu_memory.log absent)"
    assert part1[NOPIN][RUNTIME].startswith("damaged (log_history.jsonl")
    (answer,) = tables[PART1].attrs["answers"]
    assert "not answerable yet" in answer and NOPIN in answer
    part2 = rows_by_config(tables[PART2])
    assert set(part2) == {PIN, NOPIN, "stage3"}  # the manifest-less run is still lesson 2, by its name
    assert part2["stage3"]["model"] == "unknown"
    assert part2["stage3"]["DeepSpeed estimate MiB (model states)"].startswith("n/a (no estimate")
    assert part2["stage3"][RUNTIME] == train_runtime(run_of(real_logs, PIN))


@pytest.mark.slow
def test_render_shows_the_answers(real_logs):
    tables = build_tables([real_logs], by_run=True)
    markdown = render(tables, "markdown")
    for key in (PART1, PART2):
        assert f"## {tables[key].attrs['title']}" in markdown
        for answer in tables[key].attrs["answers"]:
            assert f"- {answer}" in markdown
    assert markdown.index("Answers:") > markdown.index("| stage2_offload_nopin")  # under its table

    cli = subprocess.run([sys.executable, "-m", "workshop.fill_tables", "--by-run", str(real_logs), "--format", "json"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    back = json.loads(cli.stdout)
    assert back[PART1]["answers"] == tables[PART1].attrs["answers"]
    assert [row["run"] for row in back[PART2]["rows"]] == tables[PART2]["run"].tolist()


# ---------------------------------------------------------------------------------------------- figures

@pytest.mark.slow
def test_memory_timelines_draw_each_config(real_logs, tmp_path):
    fig = plots.zero_memory_timelines([real_logs])
    fig.savefig(tmp_path / "timelines.png")
    cpu_ax = fig.axes[1]
    drawn = {line.get_label(): list(line.get_ydata()) for line in cpu_ax.lines}
    for config in (PIN, NOPIN):
        assert drawn[config_label(config)] == list(read_psrecord(run_of(real_logs, config) / "cpu_memory.log").data["real_mib"])


@pytest.mark.slow
def test_peak_bars_follow_the_table(real_logs, tmp_path):
    df = build_tables([real_logs], by_run=True)[PART2]
    fig = plots.zero_peak_bars(df)
    fig.savefig(tmp_path / "bars.png")
    heights = {container.get_label(): [bar.get_height() for bar in container]
               for container in fig.axes[0].containers}
    assert heights["peak CPU MiB (psrecord)"] == df["peak CPU MiB (psrecord)"].tolist()
    plots.zero_peak_bars(None).savefig(tmp_path / "empty.png")  # no runs yet: a figure, not an error
    plots.zero_memory_timelines([tmp_path / "nothing"]).savefig(tmp_path / "empty2.png")
