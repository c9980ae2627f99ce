"""The run folder: manifest.json, log_history.jsonl and exact peak memory (see docs/DESIGN.md).

Everything is written as it happens and flushed, so a job killed half-way still leaves readable logs.
"""
import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import TrainerCallback

from workshop.lessons import FOLDERS
from workshop.redact import redact
# write_json: where answer_quality and max_batch import it from
from workshop.run_files import RunFolderFull, append_line, hold_run_folder, is_no_space, write_json  # noqa: F401


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def job_id() -> str:
    return os.environ.get("SLURM_JOB_ID") or f"local{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"


def default_run_dir(config_name: str) -> Path:
    return Path("logs") / f"{config_name}-{job_id()}"


def processes_per_node():
    """This node's processes of the run as its launcher says (DeepSpeed's launcher sets LOCAL_SIZE, torchrun
    LOCAL_WORLD_SIZE, srun SLURM_NTASKS_PER_NODE), None where none says."""
    for name in ("LOCAL_SIZE", "LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        local = os.environ.get(name, "")
        if local.isdigit() and int(local) > 0:
            return int(local)
    return None


def node_count() -> int:
    """Nodes the run spans: world size / processes per node, else SLURM's node count, else 1."""
    local = processes_per_node()
    if local:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")) // local)
    nodes = os.environ.get("SLURM_JOB_NUM_NODES", "")
    return int(nodes) if nodes.isdigit() else 1


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def versions() -> dict:
    """The packages' versions, without importing any: importing DeepSpeed only to read its version cost a run
    that does not use it 1.6-2.0 s of start-up (the baseline, the make-it-fast ladder). A package already imported
    reports its own __version__ (torch's carries its build, e.g. 2.11.0+cu130), others their installed metadata."""
    found = {"python": platform.python_version()}
    for package in ("torch", "transformers", "accelerate", "datasets", "deepspeed"):
        module = sys.modules.get(package)
        try:
            found[package] = module.__version__ if module is not None else importlib.metadata.version(package)
        except (AttributeError, importlib.metadata.PackageNotFoundError):
            found[package] = None
    return found


CODE_ROOT = Path(__file__).resolve().parents[1]  # the checkout (or submit's snapshot) this code runs from
TRACKED_DIRS = ("workshop", *FOLDERS, "slurm")


def _git(root: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=30)


def git_provenance(root: Path = CODE_ROOT) -> dict:
    """Which code ran: commit, a hash of uncommitted changes to tracked files, and untracked code files.
    Every value is null with a `reason` when the code is not a git checkout."""
    try:
        head = _git(root, "rev-parse", "HEAD")
    except (OSError, subprocess.TimeoutExpired) as err:
        head = None
        reason = f"git not usable: {err}"
    if head is None or head.returncode != 0:
        reason = reason if head is None else f"not a git checkout: {root}"
        return {"source": "unknown", "root": str(root), "commit": None, "diff_sha256": None,
                "untracked": None, "reason": reason}
    diff = _git(root, "diff", "HEAD").stdout
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--", *TRACKED_DIRS).stdout
    return {"source": "git", "root": str(root), "commit": head.stdout.decode().strip(),
            "diff_sha256": hashlib.sha256(diff).hexdigest(), "dirty": bool(diff),
            "untracked": untracked.decode().split(), "reason": None}


def provenance(root: Path = CODE_ROOT) -> dict:
    """git_provenance of the checkout, or what `python -m workshop.submit` recorded in the snapshot."""
    snapshot = root / "SNAPSHOT.json"
    if snapshot.is_file():
        recorded = json.loads(snapshot.read_text())
        return {**recorded, "source": "snapshot", "root": str(root)}
    return git_provenance(root)


def peak_memory() -> dict:
    """Exact peaks from the framework and the kernel, in MiB."""
    peaks = {"device": "cuda" if torch.cuda.is_available() else "cpu"}
    if torch.cuda.is_available():
        peaks["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        peaks["cuda_max_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    # ru_maxrss is in KiB on Linux. The training's peak is this process's own: its children's largest is apart,
    # because it is most often the C++ compiler of a DeepSpeed op built at start-up (excluded_windows), not training.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peaks["host_peak_rss_mib"] = round(own / 1024, 1)
    peaks["children_peak_rss_mib"] = round(children / 1024, 1)
    return peaks


def cuda_memory_now() -> dict:
    """The GPU's memory right now, in MiB: what a caught torch.OutOfMemoryError is recorded with.
    allocated = live tensors, reserved = held by PyTorch's caching allocator, total = the card."""
    if not torch.cuda.is_available():
        return {"device": "cpu"}
    device = torch.cuda.current_device()
    mib = lambda size: round(size / 2**20, 1)  # noqa: E731
    return {"device": f"cuda:{device}", "allocated_mib": mib(torch.cuda.memory_allocated(device)),
            "reserved_mib": mib(torch.cuda.memory_reserved(device)),
            "max_reserved_mib": mib(torch.cuda.max_memory_reserved(device)),
            "total_mib": mib(torch.cuda.get_device_properties(device).total_memory)}


def describe_cuda_memory(memory: dict) -> str:
    """cuda_memory_now() as one phrase for an error line."""
    if "total_mib" not in memory:
        return f"no figures: device {memory.get('device')}"
    return (f"{memory['device']}: {memory['allocated_mib']:.0f} MiB allocated, {memory['reserved_mib']:.0f} MiB "
            f"reserved (peak {memory['max_reserved_mib']:.0f}) of {memory['total_mib']:.0f} MiB")


def fragmentation_hint(memory: dict, limit_mib: float | None = None, alloc_conf: str = "") -> str:
    """At an OOM: when a quarter or more of the GPU (or of its --gpu-memory-limit) is reserved by PyTorch's caching
    allocator but holds no tensor, the request failed for want of one block that large, not of memory: say so, and
    name the setting that lets the allocator grow its blocks instead ("" when it does not apply or is set)."""
    if "total_mib" not in memory or "expandable_segments:True" in alloc_conf:
        return ""
    cached = memory["reserved_mib"] - memory["allocated_mib"]
    if cached < (limit_mib or memory["total_mib"]) / 4:
        return ""
    return (f"; {cached:.0f} MiB of it was reserved but free (fragmentation): "
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True may let this size fit")


class RunLog:
    """Owns one run folder. Only the main process writes; other ranks get a no-op."""

    def __init__(self, run_dir, manifest: dict):
        self.dir = Path(run_dir)
        self.enabled = is_main_process()
        self.manifest = {
            "run_id": self.dir.name, **manifest, "argv": sys.argv, "host": socket.gethostname(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "nodes": node_count(),
            "versions": versions(), "start_time": utc_now(), "end_time": None, "status": "running",
            "exit_code": None, "error": None, "peak_memory": None, "provenance": provenance(),
            "attempts": [],
        }
        self.started = time.time()
        self.earlier_seconds = 0.0
        self.unrecorded = None  # why the end record could not be written (a full disk), else None
        if self.enabled:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._lock = hold_run_folder(self.dir)
                self._keep_earlier_attempts()
                self.save()
            except OSError as err:
                if not is_no_space(err):
                    raise
                raise RunFolderFull(self.dir / "manifest.json", err) from err

    def _keep_earlier_attempts(self):
        """A requeued job (same SLURM job id) or a rerun with the same --run-dir: the earlier attempts'
        manifests become `attempts`, oldest first; log_history.jsonl is appended to, each event tagged."""
        try:
            earlier = json.loads((self.dir / "manifest.json").read_text())
        except (OSError, ValueError):
            return
        attempts = earlier.pop("attempts", None) or []
        for key in ("versions", "settings", "argv", "provenance"):  # kept once, in the current manifest
            earlier.pop(key, None)
        if earlier.get("status") == "running":  # it never wrote its end: SIGKILL, node failure, OOM killer
            earlier["status"] = "killed (no end record)"
        attempts.append(earlier)
        self.manifest["attempts"] = attempts
        self.earlier_seconds = sum(a.get("attempt_seconds") or 0 for a in attempts)

    def update(self, **fields):
        self.manifest.update(fields)
        self.save()

    def save(self, last=False):
        if self.enabled:
            write_json(self.dir / "manifest.json", self.manifest, last=last)

    def finish(self, status: str, exit_code: int, error: str | None = None, **fields):
        """The end record. On a full disk it never raises: `unrecorded` says what the manifest still says."""
        # wall_seconds: the whole run, summed over attempts (an attempt killed without an end record counts 0)
        seconds = round(time.time() - self.started, 1)
        self.manifest.update(status=status, exit_code=exit_code, error=error, end_time=utc_now(),
                             attempt_seconds=seconds, wall_seconds=round(self.earlier_seconds + seconds, 1),
                             peak_memory=peak_memory(), **fields)
        try:
            self.save(last=True)
        except RunFolderFull:
            self.unrecorded = (f"its manifest.json could not record the end either (the disk is full): it still "
                               f"says `running`, at step {self.manifest.get('steps_done')}")

    def callback(self) -> "LogHistoryCallback":
        return LogHistoryCallback(self.dir / "log_history.jsonl", enabled=self.enabled,
                                  attempt=len(self.manifest["attempts"]))


class LogHistoryCallback(TrainerCallback):
    """Appends every Trainer log event to log_history.jsonl and prints a one-line progress report."""

    def __init__(self, path: Path, enabled: bool = True, attempt: int = 0):
        self.path = path
        self.enabled = enabled
        self.attempt = attempt
        self.started = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.enabled or not logs:
            return
        event = {**logs, "step": state.global_step, "epoch": state.epoch,
                 "elapsed_s": round(time.time() - self.started, 2), "attempt": self.attempt}
        append_line(self.path, json.dumps(redact(event)))
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in logs.items() if k in ("loss", "eval_loss", "train_loss", "epoch"))
        print(f"[workshop] step {state.global_step}/{state.max_steps} ({event['elapsed_s']:.0f} s): {shown}",
              flush=True)


class StepsCallback(TrainerCallback):
    """Keeps the manifest's steps_done current, so a run stopped by --max-steps, a time limit or a kill says how
    far it got (steps_planned is what the lesson's full run takes)."""

    def __init__(self, run: RunLog):
        self.run = run

    def on_step_end(self, args, state, control, **kwargs):
        self.run.update(steps_done=state.global_step)
