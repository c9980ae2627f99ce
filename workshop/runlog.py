"""The run folder: manifest.json, log_history.jsonl and exact peak memory (see docs/DESIGN.md).

Everything is written as it happens and flushed, so a job killed half-way still leaves readable logs.
"""
import json
import os
import platform
import resource
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import TrainerCallback


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def job_id() -> str:
    return os.environ.get("SLURM_JOB_ID") or f"local{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"


def default_run_dir(config_name: str) -> Path:
    return Path("logs") / f"{config_name}-{job_id()}"


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in ("torch", "transformers", "accelerate", "datasets", "deepspeed"):
        try:
            found[package] = __import__(package).__version__
        except Exception:  # noqa: BLE001 - deepspeed may be absent or fail to import without a GPU toolchain
            found[package] = None
    return found


def write_json(path: Path, data: dict):
    """Write atomically: a reader (or a kill) never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def peak_memory() -> dict:
    """Exact peaks from the framework and the kernel, in MiB."""
    peaks = {"device": "cuda" if torch.cuda.is_available() else "cpu"}
    if torch.cuda.is_available():
        peaks["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        peaks["cuda_max_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    # ru_maxrss is in KiB on Linux; children covers DataLoader workers and compiler subprocesses.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peaks["host_peak_rss_mib"] = round(max(own, children) / 1024, 1)
    return peaks


class RunLog:
    """Owns one run folder. Only the main process writes; other ranks get a no-op."""

    def __init__(self, run_dir, manifest: dict):
        self.dir = Path(run_dir)
        self.enabled = is_main_process()
        self.manifest = {
            "run_id": self.dir.name, **manifest, "argv": sys.argv, "host": socket.gethostname(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "versions": versions(), "start_time": utc_now(), "end_time": None, "status": "running",
            "exit_code": None, "error": None, "peak_memory": None,
        }
        self.started = time.time()
        if self.enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.save()

    def update(self, **fields):
        self.manifest.update(fields)
        self.save()

    def save(self):
        if self.enabled:
            write_json(self.dir / "manifest.json", self.manifest)

    def finish(self, status: str, exit_code: int, error: str | None = None):
        self.update(status=status, exit_code=exit_code, error=error, end_time=utc_now(),
                    wall_seconds=round(time.time() - self.started, 1), peak_memory=peak_memory())

    def callback(self) -> "LogHistoryCallback":
        return LogHistoryCallback(self.dir / "log_history.jsonl", enabled=self.enabled)


class LogHistoryCallback(TrainerCallback):
    """Appends every Trainer log event to log_history.jsonl and prints a one-line progress report."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        self.started = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.enabled or not logs:
            return
        event = {**logs, "step": state.global_step, "epoch": state.epoch,
                 "elapsed_s": round(time.time() - self.started, 2)}
        with open(self.path, "a") as f:
            f.write(json.dumps(event) + "\n")
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in logs.items() if k in ("loss", "eval_loss", "train_loss", "epoch"))
        print(f"[workshop] step {state.global_step}/{state.max_steps} ({event['elapsed_s']:.0f} s): {shown}",
              flush=True)
