"""workshop.monitor gpu: the no-GPU line, stopping with --pid, and SIGTERM losing nothing.

This machine has no GPU, so the nvidia-smi path runs against a stand-in `nvidia-smi` placed first on PATH.
It prints nvidia-smi's real CSV format: those tests check OUR process handling (starting it, copying
every line, stopping it), not NVIDIA's tool.
"""

import ctypes.util
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from workshop.monitor import HEADER, QUERY, log_gpus

REPO = Path(__file__).resolve().parents[1]

FAKE_NVIDIA_SMI = textwrap.dedent(
    """\
    #!{python}
    # Stand-in nvidia-smi for tests: two GPUs, real CSV format. Each sample's rows are also appended to
    # $FAKE_SMI_SENT, so a test can compare what was printed with what the logger wrote.
    import os, signal, sys, time
    from datetime import datetime

    if sys.argv[1:] == ["-L"]:
        print("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-fake-0)")
        print("GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-fake-1)")
        sys.exit(0)
    expected = ["--query-gpu={query}", "--format=csv", "-lms"]
    if sys.argv[1:4] != expected:
        sys.exit(f"fake nvidia-smi: unexpected arguments {{sys.argv[1:]}}")
    period = int(sys.argv[4]) / 1000
    stopping = False
    def stop(*_):
        global stopping
        stopping = True
    signal.signal(signal.SIGTERM, stop)  # finish the sample being printed, like a whole-line writer
    print("{header}", flush=True)
    sample = 0
    while not stopping:
        now = datetime.now().strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
        rows = "".join(
            f"{{now}}, {{gpu}}, NVIDIA H100 80GB HBM3, {{sample}} MiB, 81559 MiB, 0 %, 69.50 W, 33\\n"
            for gpu in (0, 1)
        )
        with open(os.environ["FAKE_SMI_SENT"], "a") as sent:
            sent.write(rows)
        sys.stdout.write(rows)
        sys.stdout.flush()
        sample += 1
        time.sleep(period)
    """
).format(python=sys.executable, query=QUERY, header=HEADER)


@pytest.fixture
def fake_smi_env(tmp_path):
    """Environment with the stand-in nvidia-smi first on PATH; `sent` is where it records its rows."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI)
    smi.chmod(0o755)
    sent = tmp_path / "sent.csv"
    sent.touch()
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_SMI_SENT=str(sent))
    return env, sent


def start_monitor(out, env, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "workshop.monitor", "gpu", "--out", str(out), "--interval", "0.05", *extra],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


def check_everything_written(out, sent):
    """The CSV is the header plus exactly the rows nvidia-smi printed, both GPUs per sample."""
    lines = out.read_text().splitlines(keepends=True)
    assert lines[0] == HEADER + "\n"
    rows = lines[1:]
    assert rows, "no samples were written"
    assert "".join(rows) == sent.read_text()
    assert [row.split(", ")[1] for row in rows] == ["0", "1"] * (len(rows) // 2)


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="this machine has NVML")
def test_no_gpu_writes_its_reason(tmp_path):
    out = tmp_path / "gpu.csv"
    empty_path = tmp_path / "empty-bin"  # no nvidia-smi on PATH
    empty_path.mkdir()
    monitor = start_monitor(out, dict(os.environ, PATH=str(empty_path)))
    assert monitor.wait(timeout=60) == 0, monitor.stderr.read()
    text = out.read_text()
    prefix = "# no GPU: nvidia-smi not found and NVML could not initialise: "
    assert text.startswith(prefix)
    assert text.count("\n") == 1 and text[len(prefix):].strip()  # one line, ending in NVML's own error


def test_pid_stops_the_logger_when_that_process_exits(tmp_path, fake_smi_env):
    env, sent = fake_smi_env
    out = tmp_path / "gpu.csv"
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    monitor = start_monitor(out, env, "--pid", str(watched.pid))
    time.sleep(1)
    assert monitor.poll() is None, "the logger stopped while the watched process was still running"
    watched.wait()
    assert monitor.wait(timeout=10) == 0, monitor.stderr.read()
    check_everything_written(out, sent)
    assert "(nvidia-smi)" in monitor.stderr.read()


def test_sigterm_flushes_every_line(tmp_path, fake_smi_env):
    env, sent = fake_smi_env
    out = tmp_path / "gpu.csv"
    monitor = start_monitor(out, env)
    time.sleep(1.5)
    assert monitor.poll() is None
    monitor.send_signal(signal.SIGTERM)
    assert monitor.wait(timeout=10) == 0, monitor.stderr.read()
    check_everything_written(out, sent)
    assert len(sent.read_text().splitlines()) >= 4  # at 0.05 s there were several samples


def test_log_gpus_function_stops_on_event(tmp_path, fake_smi_env, monkeypatch):
    env, sent = fake_smi_env
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("FAKE_SMI_SENT", str(sent))
    out = tmp_path / "gpu.csv"
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    assert log_gpus(out, 0.05, stop=stop) == "nvidia-smi"
    check_everything_written(out, sent)
