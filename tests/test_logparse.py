"""workshop.logparse on real captured logs (tests/data/logs, remade by tools/capture_trainer_4x.sh).

Fixtures: stdout_4x/ and stdout_5x/ are real Trainer stdout (transformers 4.57 and 5.24) with tqdm noise;
run_complete/baseline-1001/ holds the 5.x run's real log_history.jsonl, train.out and psrecord log;
gpu/h100_real.csv is a real nvidia-smi capture on an H100. The other gpu/*_handwritten.csv files are written by
hand in nvidia-smi's exact --format=csv layout, to cover several GPUs, [N/A] values and the old 5-column header.
"""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workshop.logparse import (
    Missing,
    Parsed,
    parse_trainer_stdout,
    read_log_history,
    read_manifest,
    read_trainer_out,
)
from workshop.monitor_logs import read_gpu_csv, read_psrecord

DATA = Path(__file__).parent / "data" / "logs"
RUN = DATA / "run_complete" / "baseline-1001"
OUT_4X = DATA / "stdout_4x" / "baseline-4242.out"
OUT_5X = DATA / "stdout_5x" / "baseline-5151.out"


def printed_dicts(text):
    """How many log dicts the Trainer printed, counted independently of the parser."""
    return text.count("{'")


@pytest.mark.parametrize("path", [OUT_4X, OUT_5X], ids=["4x", "5x"])
def test_trainer_stdout_both_dialects(path):
    text = path.read_bytes().decode()  # not read_text(): it would turn \r into \n
    assert "\r" in text  # the fixture really carries tqdm's redraws
    events = parse_trainer_stdout(text)
    assert len(events) == printed_dicts(text)
    assert all(isinstance(v, float) for e in events for v in e.values())
    evals = [e for e in events if "eval_loss" in e]
    assert [e["epoch"] for e in evals] == [1.0, 2.0, 3.0]  # eval_strategy="epoch", 3 epochs
    summary = events[-1]
    assert set(summary) >= {"train_runtime", "train_samples_per_second", "train_loss", "epoch"}
    printed = re.search(r"'train_runtime': '?([0-9.]+)", text).group(1)
    assert summary["train_runtime"] == float(printed)


def test_dialects_differ_as_documented():
    # 4.x prints floats, 5.x prints rounded strings; both come out as the same kind of dict.
    assert re.search(r"'train_runtime': [0-9]", OUT_4X.read_bytes().decode())
    assert re.search(r"'train_runtime': '[0-9]", OUT_5X.read_text())


def test_5x_stdout_is_log_history_rounded():
    # train.out and log_history.jsonl come from the same run: stdout shows each value to 4 significant digits.
    printed = read_trainer_out(RUN / "train.out").data
    logged = read_log_history(RUN / "log_history.jsonl").data
    assert len(printed) == len(logged)
    for shown, exact in zip(printed, logged):
        for key, value in shown.items():
            assert value == pytest.approx(exact[key], rel=5e-4), key


def test_stdout_nonfinite_and_noise():
    text = ("\r 30%|###   | 10/33 [00:01<00:02]{'loss': nan, 'grad_norm': inf, 'learning_rate': 0.001, 'epoch': 0.5}\n"
            "{'loss': '-inf', 'epoch': '0.6'}\n"
            "Some warning with {'a dict': 'of words'} and {broken\n"
            "{'loss': 1.5, 'epoch': 0.7\n")  # cut off: not a dict
    events = parse_trainer_stdout(text)
    assert math.isnan(events[0]["loss"]) and events[0]["grad_norm"] == math.inf and events[0]["epoch"] == 0.5
    assert events[1] == {"loss": -math.inf, "epoch": 0.6}
    assert events[2] == {"a dict": "of words"}  # non-numeric strings stay strings
    assert len(events) == 3


def test_read_trainer_out_reports_broken_dicts(tmp_path):
    path = tmp_path / "x.out"
    path.write_text("{'loss': 1.0}\n{'loss': 1.0, 'oops': [}\n")
    got = read_trainer_out(path)
    assert got == Parsed([{"loss": 1.0}], [2])


def test_log_history_truncated_last_line(tmp_path):
    lines = (RUN / "log_history.jsonl").read_text().splitlines()
    path = tmp_path / "log_history.jsonl"
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    got = read_log_history(path)
    assert got.data == [json.loads(line) for line in lines[:-1]]
    assert got.bad_lines == [len(lines)]


def test_log_history_nan_and_garbage(tmp_path):
    path = tmp_path / "log_history.jsonl"
    path.write_text('{"loss": NaN, "step": 1}\n[1, 2]\n\x00\xff\n{"loss": Infinity, "step": 2}\n')
    got = read_log_history(path)
    assert math.isnan(got.data[0]["loss"]) and got.data[1]["loss"] == math.inf
    assert got.bad_lines == [2, 3]


def test_missing_and_empty_files(tmp_path):
    assert read_log_history(tmp_path / "nope.jsonl") == Missing(
        "missing (nope.jsonl absent)", f"{tmp_path / 'nope.jsonl'} does not exist")
    (tmp_path / "empty.csv").write_text("")
    assert read_gpu_csv(tmp_path / "empty.csv").cell == "empty (empty.csv)"
    assert read_manifest(tmp_path).cell == "missing (manifest.json absent)"
    (tmp_path / "manifest.json").write_text('{"status": "runn')
    assert read_manifest(tmp_path).cell == "damaged (manifest.json unreadable)"
    (tmp_path / "manifest.json").write_text("[]")
    assert read_manifest(tmp_path).cell == "damaged (manifest.json not an object)"


def test_gpu_csv_real_h100():
    lines = (DATA / "gpu" / "h100_real.csv").read_text().splitlines()
    got = read_gpu_csv(DATA / "gpu" / "h100_real.csv")
    df = got.data
    assert got.bad_lines == []
    assert list(df.columns) == ["timestamp", "index", "name", "memory_used_mib", "memory_total_mib",
                                "util_pct", "power_w", "temp_c"]
    assert len(df) == len(lines) - 1
    used = [int(line.split(", ")[3].removesuffix(" MiB")) for line in lines[1:]]
    assert df["memory_used_mib"].tolist() == used
    assert df["timestamp"].notna().all() and (df["index"] == 0).all()
    assert df["util_pct"].max() > 0 and df["power_w"].notna().all()


def test_gpu_csv_two_gpus_with_na():
    df = read_gpu_csv(DATA / "gpu" / "two_gpus_handwritten.csv").data
    assert sorted(df["index"].unique()) == [0, 1]
    gpu1 = df[df["index"] == 1]
    assert gpu1["memory_used_mib"].isna().sum() == 1  # [N/A]
    assert gpu1["util_pct"].isna().sum() == 1  # [Not Supported]
    assert gpu1["power_w"].isna().sum() == 1
    assert df["power_w"].iloc[0] == 412.5


def test_gpu_csv_old_five_columns():
    df = read_gpu_csv(DATA / "gpu" / "old_5_columns_handwritten.csv").data
    assert df["memory_used_mib"].tolist() == [1000.0, 15000.0]
    assert df[["util_pct", "power_w", "temp_c"]].isna().all().all()


def test_gpu_csv_no_gpu_header_only_and_garbage(tmp_path):
    path = tmp_path / "gpu_memory.csv"
    path.write_text("# no GPU: nvidia-smi not found\n")
    got = read_gpu_csv(path)
    assert got.cell == "n/a (no GPU)" and "nvidia-smi not found" in got.detail
    header = (DATA / "gpu" / "h100_real.csv").read_text().splitlines()[0]
    path.write_text(header + "\n")
    assert read_gpu_csv(path).cell == "empty (gpu_memory.csv: header only)"
    path.write_text(header + "\nthis, is, not, a, sample\n2026/11/25 12:27:02.602, 0, NVIDIA H1")
    assert read_gpu_csv(path).cell == "damaged (gpu_memory.csv: no readable rows)"
    path.write_text("\x89PNG\x00garbage\n1,2,3\n")
    assert read_gpu_csv(path).cell == "damaged (gpu_memory.csv header)"


def test_psrecord_real_log():
    path = RUN / "cpu_memory.log"
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# Elapsed time")
    got = read_psrecord(path)
    assert got.bad_lines == []
    assert list(got.data.columns) == ["elapsed_s", "cpu_pct", "real_mib", "virtual_mib"]
    assert len(got.data) == len(lines) - 1
    assert got.data["real_mib"].max() == max(float(line.split()[2]) for line in lines[1:])


@pytest.mark.parametrize("log_format", ["plain", "csv"])
def test_psrecord_fresh_capture(tmp_path, log_format):
    # Record a real process now, in both of psrecord's log formats.
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(50 * 2**20); time.sleep(1.5)"])
    log = tmp_path / "cpu_memory.log"
    psrecord = Path(sys.executable).parent / "psrecord"
    subprocess.run([str(psrecord), str(child.pid), "--include-children", "--interval", "0.2",
                    "--log", str(log), "--log-format", log_format], check=True, capture_output=True)
    child.wait()
    got = read_psrecord(log)
    assert got.bad_lines == []
    assert len(got.data) >= 3
    assert got.data["elapsed_s"].is_monotonic_increasing
    assert got.data["real_mib"].max() > 50  # the child held a 50 MiB buffer


def test_psrecord_truncated_and_header_only(tmp_path):
    lines = (RUN / "cpu_memory.log").read_text().splitlines()
    path = tmp_path / "cpu_memory.log"
    path.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    got = read_psrecord(path)
    assert len(got.data) == 2 and got.bad_lines == [4]
    path.write_text(lines[0] + "\n")
    assert read_psrecord(path).cell == "empty (cpu_memory.log: header only)"
    path.write_text("garbage\n")
    assert isinstance(read_psrecord(path), Missing)


def test_parsed_frames_are_plain_pandas():
    # Notebooks use these directly.
    assert isinstance(read_gpu_csv(DATA / "gpu" / "h100_real.csv").data, pd.DataFrame)
    assert isinstance(read_psrecord(RUN / "cpu_memory.log").data, pd.DataFrame)


def _smi_log(path, memory_fields):
    """A real H100 capture's header and first sample, with memory.used replaced line by line."""
    header, sample = (DATA / "gpu" / "h100_real.csv").read_text().splitlines()[:2]
    fields = sample.split(", ")
    lines = [", ".join(fields[:3] + [value] + fields[4:]) for value in memory_fields]
    path.write_text("\n".join([header, *lines]) + "\n")
    return read_gpu_csv(path)


def test_gpu_csv_reads_each_value_in_its_unit_or_marks_the_line(tmp_path):
    got = _smi_log(tmp_path / "gpu_memory.csv", [
        "20 GiB", "1.5e4 MiB", "512 KiB", "-5 MiB", "nan MiB", "inf MiB", "12 W", "lots", "[N/A]", "300"])
    assert got.data["memory_used_mib"].tolist()[:3] == [20480.0, 15000.0, 0.5]
    assert math.isnan(got.data["memory_used_mib"].iloc[3])  # [N/A]: a sample without a value, not a bad line
    assert got.data["memory_used_mib"].iloc[4] == 300.0  # --format=csv,nounits
    assert got.bad_lines == [5, 6, 7, 8, 9]  # negative, nan, inf, a foreign unit, text: never a number


@given(value=st.floats(min_value=0, max_value=1e7), unit=st.sampled_from(["KiB", "MiB", "GiB"]),
       style=st.sampled_from(["{:g}", "{:.3e}", "{:.1f}", "{}"]))
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_gpu_csv_memory_any_unit_and_notation(tmp_path, value, unit, style):
    text = style.format(value)
    got = _smi_log(tmp_path / "gpu_memory.csv", [f"{text} {unit}"])
    expected = float(text) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]
    assert got.bad_lines == [] and got.data["memory_used_mib"].iloc[0] == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["inf", "nan", "-1.0"])
def test_psrecord_non_finite_or_negative_line_is_bad(tmp_path, bad):
    lines = (RUN / "cpu_memory.log").read_text().splitlines()
    fields = lines[2].split()
    fields[2] = bad
    path = tmp_path / "cpu_memory.log"
    path.write_text("\n".join([lines[0], lines[1], "   ".join(fields), *lines[3:]]) + "\n")
    got = read_psrecord(path)
    assert got.bad_lines == [3]
    assert got.data["real_mib"].map(math.isfinite).all() and (got.data["real_mib"] >= 0).all()
