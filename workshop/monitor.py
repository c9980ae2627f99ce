"""GPU memory logger: the lesson's nvidia-smi CSV, written the same way on any machine.

    python -m workshop.monitor gpu --out logs/RUN/gpu_memory.csv --interval 1 [--pid TRAIN_PID]

Three ways to get the numbers, first that works wins:
  1. `nvidia-smi --query-gpu=... --format=csv -lms N` (what the lesson shows students);
  2. NVML through `pynvml` (nvidia-ml-py) when nvidia-smi is not on PATH, writing the same columns;
  3. neither: a single line `# no GPU: <reason>` so the run folder still says what happened.
Every GPU of the node is recorded (one row per GPU per sample). With --pid it stops by itself when that
process exits; SIGTERM/SIGINT stop it too. Each line is flushed as written, so nothing is lost.
"""

import argparse
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime

import psutil

QUERY = "timestamp,index,name,memory.used,memory.total,utilization.gpu,power.draw,temperature.gpu"
# nvidia-smi's own header for QUERY with --format=csv; the NVML path writes it too.
HEADER = (
    "timestamp, index, name, memory.used [MiB], memory.total [MiB], "
    "utilization.gpu [%], power.draw [W], temperature.gpu"
)


def log_gpus(out, interval, pid=None, stop=None):
    """Write the GPU CSV to `out` until `pid` exits or `stop` (a threading.Event) is set.

    Returns which source was used: "nvidia-smi", "nvml" or "none".
    """
    stop = stop or threading.Event()
    with open(out, "w", buffering=1) as f:  # line-buffered: every row reaches the file at once
        smi_problem = _nvidia_smi_problem()
        if smi_problem is None:
            _log_with_nvidia_smi(f, interval, pid, stop)
            return "nvidia-smi"
        nvml_problem = _log_with_nvml(f, interval, pid, stop)
        if nvml_problem is None:
            return "nvml"
        f.write(f"# no GPU: {smi_problem} and NVML could not initialise: {nvml_problem}\n")
        return "none"


def _nvidia_smi_problem():
    """None when nvidia-smi can list GPUs, else why not (it exists but fails when there is no driver)."""
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    try:
        probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "nvidia-smi -L did not answer in 30 s"
    if probe.returncode != 0:
        message = " ".join((probe.stdout + probe.stderr).split()) or f"exit status {probe.returncode}"
        return f"nvidia-smi failed: {message}"
    return None


def _should_stop(pid, stop):
    return stop.is_set() or (pid is not None and not _alive(pid))


def _alive(pid):
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def _log_with_nvidia_smi(f, interval, pid, stop):
    ms = max(1, round(interval * 1000))
    smi = subprocess.Popen(
        ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv", "-lms", str(ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    # A thread copies lines while the main thread watches the pid and the stop flag.
    copier = threading.Thread(target=_copy_lines, args=(smi.stdout, f), daemon=True)
    copier.start()
    while smi.poll() is None and not _should_stop(pid, stop):
        stop.wait(min(interval, 0.5))
    smi.terminate()
    try:
        smi.wait(timeout=5)
    except subprocess.TimeoutExpired:
        smi.kill()
        smi.wait()
    copier.join(timeout=5)  # the pipe is at EOF once nvidia-smi is gone: the last lines are written


def _copy_lines(source, f):
    for line in source:
        f.write(line)


def _log_with_nvml(f, interval, pid, stop):
    """Sample through NVML; returns None when done, or the error text when NVML cannot start."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as error:  # ImportError, or NVMLError when there is no driver / library
        return str(error) or type(error).__name__
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        f.write(HEADER + "\n")
        while not _should_stop(pid, stop):
            for index, handle in enumerate(handles):
                f.write(_nvml_row(pynvml, index, handle) + "\n")
            stop.wait(interval)
    finally:
        pynvml.nvmlShutdown()
    return None


def _nvml_row(pynvml, index, handle):
    """One CSV row formatted like nvidia-smi's (units inside the values, [N/A] when unsupported)."""

    def field(read, fmt):
        try:
            return fmt(read(handle))
        except pynvml.NVMLError:
            return "[N/A]"

    mib = 1024**2
    timestamp = datetime.now().strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
    return ", ".join(
        [
            timestamp,
            str(index),
            field(pynvml.nvmlDeviceGetName, lambda name: name.decode() if isinstance(name, bytes) else name),
            field(pynvml.nvmlDeviceGetMemoryInfo, lambda m: f"{m.used // mib} MiB"),
            field(pynvml.nvmlDeviceGetMemoryInfo, lambda m: f"{m.total // mib} MiB"),
            field(pynvml.nvmlDeviceGetUtilizationRates, lambda u: f"{u.gpu} %"),
            field(pynvml.nvmlDeviceGetPowerUsage, lambda mw: f"{mw / 1000:.2f} W"),
            field(lambda h: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU), str),
        ]
    )


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m workshop.monitor", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    gpu = sub.add_parser("gpu", help="log GPU memory/utilisation as nvidia-smi CSV")
    gpu.add_argument("--out", required=True, help="CSV file to write")
    gpu.add_argument("--interval", type=float, default=1.0, help="seconds between samples (0.05 is fine)")
    gpu.add_argument("--pid", type=int, help="stop when this process exits")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error(f"--interval must be positive, got {args.interval}")

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    source = log_gpus(args.out, args.interval, pid=args.pid, stop=stop)
    print(f"[monitor] gpu log ({source}) written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
