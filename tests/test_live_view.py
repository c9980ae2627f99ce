"""The live view: a tiny run's TensorBoard events, read back with TensorBoard's own reader, hold the Trainer's
loss (the same figures as log_history.jsonl) and the loggers' host memory (within psrecord's samples); a run where
tensorboard cannot be imported trains as before and says so once."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from workshop.monitor_logs import read_psrecord

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_tiny_runs_events_hold_its_loss_and_memory(lesson_logs):
    [run_dir] = lesson_logs("baseline", ("slurm/baseline.slurm",)).glob("baseline-local*")
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    logged = [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]
    losses = [(event["step"], event["loss"]) for event in logged if "loss" in event]
    assert losses and [(e.step, round(e.value, 5)) for e in events.Scalars("train/loss")] == \
        [(step, round(loss, 5)) for step, loss in losses]
    assert "eval/loss" in tags and "train/learning_rate" in tags
    host = events.Scalars("memory/host_rss_mib")
    samples = list(read_psrecord(run_dir / "cpu_memory.log").data["real_mib"])
    # psrecord samples once a second, the tiny run logs more often: a point where a new sample came, each the
    # peak of those samples (TensorBoard keeps float32)
    assert len(host) >= 2 and all(any(abs(e.value - s) < 0.01 for s in samples) for e in host)
    assert [e.step for e in host] == sorted({e.step for e in host})
    assert not [tag for tag in tags if tag.startswith("memory/gpu")]  # a CPU run: gpu_memory.csv says no GPU


@pytest.mark.slow
def test_without_tensorboard_a_run_trains_and_says_so_once(tmp_path):
    hidden = tmp_path / "hidden" / "tensorboard"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('tensorboard hidden by the test')\n")
    run = subprocess.run(
        [sys.executable, "-m", "workshop.train", "--profile", "tiny", "--max-steps", "2", "--logging-steps", "1",
         "--save-strategy", "no", "--no-save-final", "--eval-strategy", "no", "--no-score-answers",
         "--run-dir", str(tmp_path / "run"), "--output-dir", str(tmp_path / "out")],
        cwd=REPO, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                       "PYTHONPATH": f"{hidden.parent}:{REPO}", "HOME": str(Path.home())},
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    output = run.stdout + run.stderr
    assert output.count("tensorboard is not installed, so this run writes no live view") == 1
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "completed"
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_the_gpu_series_reads_nvidia_smis_csv_as_it_grows(tmp_path):
    """The H100's real nvidia-smi CSV, arriving in two pieces cut mid-line: each GPU's peak is the parser's
    (workshop.monitor_logs), and the half-written line waits for its end."""
    from workshop.live_view import _Tail, _gpu_peaks
    from workshop.monitor_logs import read_gpu_csv

    real = (REPO / "tests" / "data" / "logs" / "gpu" / "h100_real.csv").read_bytes()
    growing = tmp_path / "gpu_memory.csv"
    tail, cut = _Tail(growing), len(real) // 2
    growing.write_bytes(real[:cut])
    first = tail.lines()
    with open(growing, "ab") as handle:
        handle.write(real[cut:])
    second = tail.lines()
    assert "\n".join(first + second) + "\n" == real.decode()  # every line once, none cut
    frame = read_gpu_csv(REPO / "tests" / "data" / "logs" / "gpu" / "h100_real.csv").data
    expected = frame.groupby("index")["memory_used_mib"].max()
    peaks = {int(index): peak for index, peak in _gpu_peaks(first + second).items()}
    assert peaks == {int(index): float(peak) for index, peak in expected.items()} and max(peaks.values()) > 0
