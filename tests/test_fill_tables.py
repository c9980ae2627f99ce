"""workshop.fill_tables on real captured logs (see tests/test_logparse.py for where each fixture comes from).

Partial and corrupt runs are made here from the real complete run, so each test shows what it broke.
Expected values are read from the fixture files themselves, never typed in.
"""

import functools
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workshop import fill_tables
from workshop.fill_tables import LESSONS, Lesson, Table, build_tables, epoch_label
from workshop.logparse import parse_trainer_stdout

DATA = Path(__file__).parent / "data" / "logs"
COMPLETE = DATA / "run_complete" / "baseline-1001"
REPO = Path(__file__).parent.parent


def history():
    return [json.loads(line) for line in (COMPLETE / "log_history.jsonl").read_text().splitlines()]


def copy_run(dest, name="baseline-1001"):
    run = dest / name
    shutil.copytree(COMPLETE, run)
    return run


def edit_manifest(run, **changes):
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update(changes)
    (run / "manifest.json").write_text(json.dumps(manifest))


def only_row(tables, key):
    df = tables[key]
    assert len(df) == 1
    return df.iloc[0]


def test_complete_run_folder(tmp_path):
    copy_run(tmp_path)
    shutil.copy(COMPLETE.parent / "baseline-1001.out", tmp_path)  # SLURM's .out: the same run, not a second row
    tables = build_tables([tmp_path], by_run=True)
    row = only_row(tables, "baseline_objective_1")
    events = history()
    evals = [e for e in events if "eval_loss" in e]
    summary = events[-1]
    assert row["run"] == "baseline-1001" and row["status"] == "completed"
    assert row["train loss (last logged)"] == [e for e in events if "loss" in e][-1]["loss"]
    assert row["train_loss (run mean)"] == summary["train_loss"]
    assert [row[f"eval loss (epoch {i})"] for i in (1, 2, 3)] == [e["eval_loss"] for e in evals]
    assert row["train samples/s"] == summary["train_samples_per_second"]
    assert row["eval samples/s (last eval)"] == evals[-1]["eval_samples_per_second"]
    manifest = json.loads((COMPLETE / "manifest.json").read_text())
    assert row["steps/epoch"] == manifest["steps_per_epoch"]

    mem = only_row(tables, "baseline_objective_2")
    gpu_lines = (COMPLETE / "gpu_memory.csv").read_text().splitlines()[1:]
    used = [float(line.split(", ")[3].split()[0]) for line in gpu_lines]
    assert (mem["GPU MiB peak"], mem["GPU MiB min"]) == (max(used), min(used))
    assert mem["GPU MiB mean"] == pytest.approx(sum(used) / len(used))
    assert mem["torch max reserved MiB"] == manifest["peak_memory"]["cuda_max_reserved_mib"]
    assert mem["host RSS MiB peak (manifest)"] == manifest["peak_memory"]["host_peak_rss_mib"]
    rss = [float(line.split()[2]) for line in (COMPLETE / "cpu_memory.log").read_text().splitlines()[1:]]
    assert mem["host RSS MiB peak (psrecord)"] == max(rss)
    # a complete run has nothing to explain but how to score its answers (EM/F1)
    assert [note for note in tables["baseline_objective_1"].attrs["notes"] if "answer_quality" not in note] == []


def test_steps_per_epoch_without_manifest_field(tmp_path):
    run = copy_run(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    expected = manifest.pop("steps_per_epoch")
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert only_row(build_tables([tmp_path], by_run=True), "baseline_objective_1")["steps/epoch"] == expected


def test_partial_running_run(tmp_path):
    run = copy_run(tmp_path)
    edit_manifest(run, status="running", end_time=None, peak_memory=None)
    lines = (COMPLETE / "log_history.jsonl").read_text().splitlines()
    (run / "log_history.jsonl").write_text("\n".join(lines[:3]) + "\n")  # three train logs, no eval yet
    header = (COMPLETE / "gpu_memory.csv").read_text().splitlines()[0]
    (run / "gpu_memory.csv").write_text(header + "\n")
    tables = build_tables([tmp_path], by_run=True)
    row = only_row(tables, "baseline_objective_1")
    assert row["status"] == "running"
    assert row["train loss (last logged)"] == json.loads(lines[2])["loss"]
    for column in ["eval loss (epoch 1)", "eval loss (epoch 3)", "train samples/s", "eval samples/s (last eval)"]:
        assert row[column] == "not yet (running)"
    mem = only_row(tables, "baseline_objective_2")
    assert mem["GPU MiB peak"] == "empty (gpu_memory.csv: header only)"
    assert mem["torch max reserved MiB"] == "not yet (running)"
    notes = tables["baseline_objective_1"].attrs["notes"]
    assert any("still running" in note for note in notes)


def test_corrupt_run(tmp_path):
    run = copy_run(tmp_path)
    edit_manifest(run, status="failed", exit_code=1)
    lines = (COMPLETE / "log_history.jsonl").read_text().splitlines()
    first_eval = next(i for i, line in enumerate(lines) if "eval_loss" in line)
    # A garbage line 2, then the history cut in the middle of the first eval event.
    broken = [lines[0], "\x00\x17garbage{{", *lines[1:first_eval], lines[first_eval][:30]]
    (run / "log_history.jsonl").write_text("\n".join(broken))
    (run / "gpu_memory.csv").write_bytes(b"\xff\xfe\x00 not, a csv\n\x01\x02\n")
    (run / "cpu_memory.log").write_text("")
    tables = build_tables([tmp_path], by_run=True)
    row = only_row(tables, "baseline_objective_1")
    marker = f"damaged (log_history.jsonl lines 2, {len(broken)} unreadable)"
    assert row["status"] == "failed"
    assert row["eval loss (epoch 1)"] == marker and row["train samples/s"] == marker
    assert row["train loss (last logged)"] == json.loads(lines[first_eval - 1])["loss"]
    mem = only_row(tables, "baseline_objective_2")
    assert mem["GPU MiB peak"] == "damaged (gpu_memory.csv header)"
    assert mem["host RSS MiB peak (psrecord)"] == "empty (cpu_memory.log)"
    notes = " ".join(tables["baseline_objective_2"].attrs["notes"])
    assert "gpu_memory.csv" in notes and "cpu_memory.log" in notes


def test_no_gpu_run(tmp_path):
    run = copy_run(tmp_path)
    edit_manifest(run, peak_memory={"device": "cpu", "cuda_max_allocated_mib": None, "cuda_max_reserved_mib": None,
                                    "host_peak_rss_mib": 400.0})
    (run / "gpu_memory.csv").write_text("# no GPU: nvidia-smi not found and NVML failed to load\n")
    tables = build_tables([tmp_path], by_run=True)
    mem = only_row(tables, "baseline_objective_2")
    assert mem["GPU MiB peak"] == mem["torch max reserved MiB"] == "n/a (no GPU)"
    assert any("NVML failed to load" in note for note in tables["baseline_objective_2"].attrs["notes"])


def test_two_gpus_take_the_worst_gpu(tmp_path):
    run = copy_run(tmp_path)
    shutil.copy(DATA / "gpu" / "two_gpus_handwritten.csv", run / "gpu_memory.csv")
    mem = only_row(build_tables([tmp_path], by_run=True), "baseline_objective_2")
    # GPU 0 used 20104, 30000, 10000 MiB; GPU 1 18000, 22000, [N/A]: peak and mean come from GPU 0, min from GPU 1.
    assert (mem["GPU MiB peak"], mem["GPU MiB mean"], mem["GPU MiB min"]) == (30000, 20034.666666666668, 18000)
    assert mem["GPUs"] == "2 x NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize("version", ["4x", "5x"])
def test_bare_out(tmp_path, version):
    source = next((DATA / f"stdout_{version}").glob("*.out"))
    shutil.copy(source, tmp_path)
    tables = build_tables([tmp_path], by_run=True)
    row = only_row(tables, "baseline_objective_1")
    events = parse_trainer_stdout(source.read_bytes().decode())
    assert row["run"] == source.stem and row["status"] == "completed"
    assert [row[f"eval loss (epoch {i})"] for i in (1, 2, 3)] == [e["eval_loss"] for e in events if "eval_loss" in e]
    assert row["train samples/s"] == events[-1]["train_samples_per_second"]
    # Stdout has no step numbers: the training progress bar's total over the epochs gives steps per epoch.
    total_steps = int(re.search(r"\| 0/(\d+) \[", source.read_bytes().decode()).group(1))
    assert row["steps/epoch"] == total_steps / events[-1]["epoch"]
    mem = only_row(tables, "baseline_objective_2")
    assert mem["GPU MiB peak"] == "n/a (no nvidia-smi CSV)"  # nothing beside it with its job id or name


def test_fractional_last_eval_and_extra_epochs():
    assert [epoch_label(e, 0) for e in (1.0, 2.0, 2.93, 2.89, 0.5)] == [1, 2, 3, 2.89, 0.5]
    assert epoch_label(float("nan"), 4) == 4 and epoch_label(None, 2) == 2


def test_fractional_eval_in_a_run(tmp_path):
    run = copy_run(tmp_path)
    events = history()
    last_eval = [e for e in events if "eval_loss" in e][-1]
    last_eval["epoch"] = 2.93
    (run / "log_history.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    row = only_row(build_tables([tmp_path], by_run=True), "baseline_objective_1")
    assert row["eval loss (epoch 3)"] == last_eval["eval_loss"]


def test_nonfinite_losses_render(tmp_path):
    run = copy_run(tmp_path)
    events = history()
    [e for e in events if "loss" in e][-1]["loss"] = float("nan")
    events[-1]["train_loss"] = float("inf")
    (run / "log_history.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    tables = build_tables([tmp_path], by_run=True)
    row = only_row(tables, "baseline_objective_1")
    assert math.isnan(row["train loss (last logged)"]) and row["train_loss (run mean)"] == math.inf
    text = fill_tables.render(tables, "markdown")
    assert "| nan" in text and "| inf" in text
    back = json.loads(fill_tables.render(tables, "json"))
    assert back["baseline_objective_1"]["rows"][0]["train_loss (run mean)"] == "inf"
    # in csv too: a diverged loss is a value, not an empty cell
    csv_text = fill_tables.render(tables, "csv")
    [row] = [line for line in csv_text.splitlines() if line.startswith("baseline-1001,")][:1]
    assert ",nan," in row and ",inf," in row


def test_a_run_id_with_a_line_break_or_pipe_keeps_its_markdown_row(tmp_path):
    """A run id is whatever the manifest says (a hand edit, a --config-name from before it was checked)."""
    edit_manifest(copy_run(tmp_path), run_id="odd|name\nsecond line")
    text = fill_tables.render(build_tables([tmp_path], by_run=True), "markdown")
    assert "odd\\|name second line" in text
    for section in text.split("\n## "):  # every row of each table has its header's number of cells
        table = [line for line in section.splitlines() if line.startswith("|")]
        assert len({line.count("|") - line.count("\\|") for line in table}) == 1, table


def test_lesson_registry(tmp_path):
    run = copy_run(tmp_path, "deepspeed_single_gpu_zero2-7")
    edit_manifest(run, run_id="deepspeed_single_gpu_zero2-7", lesson="deepspeed_single_gpu")
    (tmp_path / "deepspeed_multi_gpu-8.out").write_bytes((COMPLETE / "train.out").read_bytes())
    tables = build_tables([tmp_path], by_run=True)
    # Neither is a baseline run; the lesson-3 .out lands in lesson 3's table only, and the lesson-2 run has no
    # known DeepSpeed config, so no lesson-2 table takes it.
    assert not [key for key in tables if key.startswith(("baseline", "deepspeed_single_gpu"))]
    assert list(tables["deepspeed_multi_gpu_weak_scaling"]["run"]) == ["deepspeed_multi_gpu-8"]

    # A lesson is data: a table of our own, given to build_tables, sees that lesson's runs and no global changes.
    def row(run):
        return {"run": run.name, "status": run.status}

    lesson = Lesson("deepspeed_single_gpu", folder="deepspeed_single_gpu", tables=(Table("ds_test", "A test", row),))
    tables = build_tables([tmp_path], tables=[LESSONS[0], lesson, *LESSONS[2:]])
    assert [key for key in tables if key.startswith(("baseline", "deepspeed_single_gpu", "ds_"))] == ["ds_test"]
    assert tables["ds_test"].to_dict("records") == [{"run": "deepspeed_single_gpu_zero2-7", "status": "completed"}]
    assert "ds_test" not in build_tables([tmp_path])


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "workshop.fill_tables", "--by-run", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_formats_parse_back(tmp_path):
    copy_run(tmp_path)
    shutil.copy(next((DATA / "stdout_4x").glob("*.out")), tmp_path)
    expected = build_tables([tmp_path], by_run=True)

    md = run_cli(tmp_path)
    assert md.returncode == 0 and md.stderr == ""
    assert "## Baseline, objective 1" in md.stdout and "| baseline-4242" in md.stdout

    csv = run_cli(tmp_path, "--format", "csv")
    assert csv.returncode == 0
    blocks = [b for b in csv.stdout.split("# ") if b.strip()]
    assert len(blocks) == len(expected)
    for block in blocks:
        key, _, body = block.partition("\n")
        back = pd.read_csv(io.StringIO(body))
        assert list(back.columns) == list(expected[key].columns)
        assert back["run"].tolist() == expected[key]["run"].tolist()

    js = run_cli(tmp_path, "--format", "json")
    back = json.loads(js.stdout)
    assert set(back) == set(expected)
    rows = back["baseline_objective_1"]["rows"]
    assert [r["eval loss (epoch 2)"] for r in rows] == expected["baseline_objective_1"]["eval loss (epoch 2)"].tolist()


def test_cli_no_runs_and_foreign_files(tmp_path):
    result = run_cli(tmp_path)
    # An empty folder is not an error, but the student learns which command makes a run.
    assert result.returncode == 0 and result.stdout.startswith("no runs found under")
    assert "bash slurm/baseline.slurm" in result.stdout
    # A path that does not exist is a mistake (a typo): one error line, exit 2, nothing on stdout.
    result = run_cli(tmp_path, tmp_path / "does-not-exist")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and "does-not-exist" in result.stderr and result.stderr.count("\n") == 1
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.out").write_text("")
    (tmp_path / "binary.out").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "sub" / "log_history.jsonl").parent.mkdir()
    (tmp_path / "sub" / "log_history.jsonl").write_text("")
    result = run_cli(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| empty " in result.stdout and "| binary " in result.stdout and "| sub " in result.stdout


LOG_FILES = ["manifest.json", "log_history.jsonl", "train.out", "gpu_memory.csv", "cpu_memory.log"]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(victim=st.sampled_from(LOG_FILES + ["baseline-1001.out"]),
       junk=st.one_of(st.binary(max_size=300),
                      st.lists(st.text(max_size=80), max_size=8).map(lambda ls: "\n".join(ls).encode())),
       position=st.floats(0, 1), replace=st.booleans())
def test_fuzz_logs_never_crash(victim, junk, position, replace):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = copy_run(tmp)
        bare = victim == "baseline-1001.out"
        path = tmp / victim if bare else run / victim
        original = (COMPLETE.parent / victim if bare else COMPLETE / victim).read_bytes()
        if replace:
            content = junk
        else:  # splice the junk in at a line boundary or mid-line
            cut = int(position * len(original))
            content = original[:cut] + junk + original[cut:]
        path.write_bytes(content)
        if bare:
            path.rename(tmp / "other-run.out")  # a bare .out that is its own run
        tables = build_tables([tmp], by_run=True)
        assert 1 <= len(tables["baseline_objective_1"]) <= 2
        for fmt in ["markdown", "csv", "json"]:
            fill_tables.render(tables, fmt)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6)
MANIFEST_KEYS = ["run_id", "lesson", "status", "settings", "steps_per_epoch", "peak_memory"]
EVENT_KEYS = ["loss", "eval_loss", "epoch", "step", "train_runtime", "train_loss", "train_samples_per_second",
              "eval_samples_per_second"]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifest=st.dictionaries(st.sampled_from(MANIFEST_KEYS), JSON_VALUES | st.fixed_dictionaries(
           {"device": JSON_VALUES, "cuda_max_reserved_mib": JSON_VALUES, "num_train_epochs": JSON_VALUES})),
       events=st.lists(st.dictionaries(st.sampled_from(EVENT_KEYS), JSON_VALUES), max_size=6))
def test_fuzz_wrongly_typed_json_never_crashes(manifest, events):
    # Well-formed JSON with the right keys but any values: the parsers accept it, the tables must cope.
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_run(Path(tmp))
        (run / "manifest.json").write_text(json.dumps(manifest))
        (run / "log_history.jsonl").write_text("\n".join(json.dumps(e) for e in events))
        tables = build_tables([tmp], by_run=True)
        for fmt in ["markdown", "csv", "json"]:
            fill_tables.render(tables, fmt)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=6)
MANIFEST_KEYS = ["settings", "speed", "peak_memory", "preflight", "model_states", "startup", "status", "lesson",
                 "model", "config_name", "steps_per_epoch", "world_size"]


@pytest.mark.parametrize("lesson", [lesson.name for lesson in LESSONS])
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(MANIFEST_KEYS + ["settings", "speed"] * 3),  # the sections lessons read most
       setting=st.sampled_from(["optim", "deepspeed", "precision", "padding", "attention", "fp16", "max_length",
                                "per_device_train_batch_size", "torch_compile", "model"]),
       value=JSON_VALUES, inside=st.booleans())
def test_fuzz_wrongly_typed_manifests_of_every_lesson_never_crash(lesson, key, setting, value, inside):
    """A manifest with the right keys and wrong value types, filed under any lesson (a hand edit, another tool's
    file): no table raises, and a section or setting that is not what the lessons read is named in a note."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = tmp / f"{lesson}-1001"
        shutil.copytree(COMPLETE, run)
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["lesson"] = lesson
        if inside and key == "settings":
            manifest["settings"][setting] = value
        else:
            manifest[key] = value
        (run / "manifest.json").write_text(json.dumps(manifest))
        for by_run in (False, True):
            tables = build_tables([tmp], by_run=by_run)
            for fmt in ["markdown", "csv", "json"]:
                fill_tables.render(tables, fmt)
        if key in ("settings", "speed", "peak_memory") and value is not None and not isinstance(value, dict) \
                and not inside:
            [loaded] = fill_tables.load_runs([tmp])
            assert any(f"`{key}` is {type(value).__name__}" in note for note in loaded.notes), loaded.notes


def test_unreadable_out_files_are_named_and_skipped(tmp_path):
    """A symlink loop or a broken link named *.out: the other runs' tables, and one line saying what was skipped."""
    copy_run(tmp_path)
    (tmp_path / "loop.out").symlink_to("loop.out")
    (tmp_path / "broken.out").symlink_to(tmp_path / "nowhere")
    result = run_cli(tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    for name in ("loop.out", "broken.out"):
        assert f"skipped {tmp_path / name}: not a readable file" in result.stderr
    assert "baseline-1001" in result.stdout


def test_reporting_never_reaches_for_the_network(tmp_path):
    """A lesson-2 run of a Hub model that is not cached: its DeepSpeed estimate cell says it cannot be computed,
    and no request leaves (the Hub here is a local socket that counts connections; a real one cost 51 s of retries)."""
    import socket

    run = copy_run(tmp_path, "stage2-1001")
    edit_manifest(run, lesson="deepspeed_single_gpu", config_name="stage2", run_id="stage2-1001",
                  model="someorg/not-cached", deepspeed_config="deepspeed_single_gpu/configs/stage2.json")
    hub = socket.socket()
    hub.bind(("127.0.0.1", 0))
    hub.listen(8)
    hub.settimeout(0.5)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{hub.getsockname()[1]}", HF_HOME=str(tmp_path / "hf"),
               XDG_CACHE_HOME=str(tmp_path / "cache"), HOME=str(tmp_path / "home"))
    before = {path: path.stat().st_mtime_ns for path in run.rglob("*")}
    result = subprocess.run([sys.executable, "-m", "workshop.fill_tables", "--by-run", str(tmp_path)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "stage2-1001" in result.stdout, result.stderr[-2000:]
    # it writes nothing: not in the logs it reads, not in a cache, but for matplotlib's font list (README)
    assert {path: path.stat().st_mtime_ns for path in run.rglob("*")} == before
    written = [path for path in tmp_path.rglob("*") if path.is_file() and run not in path.parents]
    assert all(tmp_path / "cache" / "matplotlib" in path.parents for path in written), written
    with pytest.raises(TimeoutError):
        hub.accept()  # nobody called
    hub.close()


def test_runs_sharing_a_run_id_or_a_job_id_are_named_and_kept_apart(tmp_path):
    """A run folder copied under another name keeps its manifest's run id; two .out files end in one SLURM job id.
    Each stays a row of its own (the copy's own status shows), and a note names both paths."""
    first = copy_run(tmp_path / "a")
    copy = copy_run(tmp_path / "b", "baseline-1001-copy")  # the later path: the #2
    edit_manifest(copy, status="failed")  # tells the two rows apart
    outs = tmp_path / "job"
    outs.mkdir()
    shutil.copy(next((DATA / "stdout_4x").glob("*.out")), outs / "baseline-777.out")
    shutil.copy(next((DATA / "stdout_5x").glob("*.out")), outs / "baseline_repeat-777.out")
    shutil.copy(DATA / "gpu" / "h100_real.csv", outs / "baseline-single-gpu_memory_log777.csv")  # whose is it?
    result = run_cli(tmp_path, "--format", "json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    table = json.loads(result.stdout)["baseline_objective_1"]
    statuses = {row["run"]: row["status"] for row in table["rows"]}
    assert {name: statuses.get(name) for name in ("baseline-1001", "baseline-1001#2")} == \
        {"baseline-1001": "completed", "baseline-1001#2": "failed"}, statuses
    assert "baseline-777" in statuses and "baseline_repeat-777" in statuses
    [same_run] = [note for note in table["notes"] if "`same run id`" in note]
    assert f"{first} and {copy} all carry run id baseline-1001, one run copied" in same_run
    [same_job] = [note for note in table["notes"] if "`same job id`" in note]
    assert f"{outs / 'baseline-777.out'} and {outs / 'baseline_repeat-777.out'} all end in SLURM job id 777" \
        in same_job and "no memory log beside them is paired with either" in same_job
    # the CSV stays a run of its own rather than one .out's by a guess
    memory = {row["run"]: row["GPU MiB peak"] for row in json.loads(result.stdout)["baseline_objective_2"]["rows"]}
    assert memory["baseline-777"] == memory["baseline_repeat-777"] == "n/a (no nvidia-smi CSV)", memory
    assert isinstance(memory["baseline-single-gpu_memory_log777"], float), memory


def with_permissions_enforced():
    """The prefix that runs a command with file permissions enforced on this user: as root (CI, this machine),
    setpriv drops the two capabilities that let root pass over them; another user has none to drop."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("as root, enforcing file permissions needs util-linux's setpriv")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]


def test_unreadable_run_folders_are_named_and_an_unreadable_logs_folder_is_an_error(tmp_path):
    logs = tmp_path / "logs"
    copy_run(logs)
    hidden, locked = copy_run(logs, "baseline-1002"), copy_run(logs, "baseline-1003")
    hidden.chmod(0)
    locked.chmod(0o444)  # listed, but not entered: every file in it would raise
    command = [*with_permissions_enforced(), sys.executable, "-m", "workshop.fill_tables", "--by-run", str(logs)]
    try:
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
        for run in (hidden, locked):
            assert f"[fill_tables] skipped {run}: cannot read this folder (Permission denied)" in result.stderr
            assert run.name not in result.stdout
        assert "| baseline-1001 " in result.stdout
        logs.chmod(0)  # the argument itself: not "no runs found", exit 0
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and result.stdout == "", result.stdout
        assert result.stderr.startswith("error: this user") and f"may not read {logs}\n" == \
            result.stderr.split(") ", 1)[1], result.stderr
        inside = subprocess.run([*command[:-1], str(logs / "baseline-1001")], cwd=REPO, capture_output=True,
                                text=True, timeout=120)  # a run folder in it: its path cannot even be looked at
        assert inside.returncode == 2 and inside.stderr.endswith(f"may not read {logs / 'baseline-1001'}\n"), \
            inside.stderr[-2000:]
    finally:
        for path in (logs, hidden, locked):
            path.chmod(0o755)


def test_a_memory_log_of_other_columns_beside_a_bare_out_is_named_not_absent(tmp_path):
    """The nvidia-smi CSV beside a SLURM .out was queried for other columns (no memory.used): its cells say the
    file is there and why it is unread, not that there is none."""
    shutil.copy(next((DATA / "stdout_4x").glob("*.out")), tmp_path / "baseline-4242.out")
    real = (DATA / "gpu" / "h100_real.csv").read_text()
    (tmp_path / "baseline-single-gpu_memory_log4242.csv").write_text(real.replace("memory.used", "utilization.gpu"))
    result = run_cli(tmp_path, "--format", "json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    table = json.loads(result.stdout)["baseline_objective_2"]
    [row] = [row for row in table["rows"] if row["run"] == "baseline-4242"]
    assert row["GPU MiB peak"] == row["GPU MiB mean"] == "damaged (other columns)", row
    [note] = [note for note in table["notes"] if "damaged (other columns)" in note]
    assert "baseline-single-gpu_memory_log4242.csv beside baseline-4242.out has its job id, but is no nvidia-smi " \
           "CSV: it starts `timestamp, index" in note, note


# nvidia-smi memory.used fields a hostile or broken log holds -> what each reads as: MiB, or None for a bad line
HOSTILE_GPU = {"20 GiB": 20480.0, "1.5e4 MiB": 15000.0, "-5 MiB": None, "nan MiB": None, "inf MiB": None,
               "lots": None, "12 W": None}


@functools.cache
def clean_samples():
    """The real capture's memory samples, line by line (line 1 of each file is sample 0)."""
    from workshop.monitor_logs import read_gpu_csv, read_psrecord

    return (read_gpu_csv(COMPLETE / "gpu_memory.csv").data["memory_used_mib"].tolist(),
            read_psrecord(COMPLETE / "cpu_memory.log").data["real_mib"].tolist())


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(lesson=st.sampled_from([lesson.name for lesson in LESSONS]), copies=st.integers(1, 3), loop=st.booleans(),
       shared_job=st.booleans(), gpu=st.sampled_from(sorted(HOSTILE_GPU)), rss=st.sampled_from(["inf", "nan", "-1.0"]),
       line=st.integers(1, 25))
def test_fuzz_hostile_folders_never_crash_keep_runs_apart_and_never_show_a_bad_value(lesson, copies, loop,
                                                                                      shared_job, gpu, rss, line):
    """Copies of one run (one run id), filed under any lesson, with a hostile nvidia-smi and psrecord value; a
    symlink loop named .out; two .out files of one job id. Nothing raises, no two runs merge, and a memory peak is
    the clean capture's, or the hostile value read in its own unit, never a bad line's."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for number in range(copies):
            run = copy_run(tmp / f"copy{number}")
            edit_manifest(run, lesson=lesson)
            rows = (run / "gpu_memory.csv").read_text().splitlines()
            fields = rows[line].split(", ")
            fields[3] = gpu
            rows[line] = ", ".join(fields)
            (run / "gpu_memory.csv").write_text("\n".join(rows) + "\n")
            samples = (run / "cpu_memory.log").read_text().splitlines()
            values = samples[line].split()
            values[2] = rss
            samples[line] = "   ".join(values)
            (run / "cpu_memory.log").write_text("\n".join(samples) + "\n")
        if loop:
            (tmp / "loop.out").symlink_to("loop.out")
        if shared_job:
            shutil.copy(next((DATA / "stdout_4x").glob("*.out")), tmp / "baseline-77.out")
            shutil.copy(next((DATA / "stdout_5x").glob("*.out")), tmp / "baseline_again-77.out")
        runs = fill_tables.load_runs([tmp])
        names = [run.name for run in runs]
        assert len(set(names)) == len(names) == copies + 2 * shared_job, names
        for by_run in (False, True):
            tables = build_tables([tmp], by_run=by_run, runs=fill_tables.load_runs([tmp]))
            for fmt in ["markdown", "csv", "json"]:
                fill_tables.render(tables, fmt)
        if lesson == "baseline":  # the bad line is left out, a value in another unit is read in it
            gpu_samples, rss_samples = clean_samples()
            good_gpu = [value for number, value in enumerate(gpu_samples, 1) if number != line]
            good_rss = [value for number, value in enumerate(rss_samples, 1) if number != line]
            expected = (max(good_gpu + [HOSTILE_GPU[gpu] or 0]), max(good_rss))
            for row in tables["baseline_objective_2"].to_dict("records"):
                if row["run"].startswith("baseline-1001"):
                    assert (row["GPU MiB peak"], row["host RSS MiB peak (psrecord)"]) == \
                        pytest.approx(expected, rel=1e-3), (row, gpu, rss, line)
