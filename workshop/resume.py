"""[failures] --resume: the checkpoint a run goes on from, or None for step 0.

    --resume auto    (the default) a requeued job, or a rerun into the same --run-dir, goes on from its own latest
                     whole checkpoint; a resubmit (a new job id: a new run folder) goes on from the newest earlier
                     run of the same config and settings when that one did not complete (cancelled, timed out,
                     disk full, failed): from its latest whole checkpoint, or the one it had resumed from
    --resume never   step 0, whatever was saved before
    --resume PATH    that checkpoint-N folder

Settings must match because the Trainer restores the optimizer, scheduler and data order as they were: a checkpoint
of another model, batch shape or DeepSpeed config would fail to load or silently train something else. When
the newest such run completed, a new one starts afresh: running the same config again (a second repeat for the
spread) is no resubmit. A run killed with SIGKILL still says "running": name its checkpoint with --resume PATH.
"""
import dataclasses
import json
from pathlib import Path

from workshop.config import DeepSpeedMemory, ModelData, RunConfig, Speed, Trainer
from workshop.errors import WorkshopError
from workshop.guards import CHECKPOINT_DONE, last_whole_checkpoint

# What a checkpoint's run must share with this one; the output folder, step and epoch counts and evaluation
# batch may differ (a resubmit may ask for more steps).
MUST_MATCH = tuple(field.name for section in (ModelData, Trainer, DeepSpeedMemory, Speed)
                   for field in dataclasses.fields(section)
                   if field.name not in ("output_dir", "num_train_epochs", "max_steps", "per_device_eval_batch_size",
                                         "eval_strategy", "save_strategy", "save_steps", "logging_steps",
                                         "gpu_memory_limit", "host_memory_gib", "nvme_path", "torch_profiler"))
UNFINISHED = ("cancelled", "timeout", "disk full", "failed", "rank lost", "oom")


def named_checkpoint(path: str) -> str:
    if not (Path(path) / CHECKPOINT_DONE).is_file():
        raise WorkshopError(f"--resume {path}: not a whole checkpoint (a checkpoint-N folder with its "
                            f"{CHECKPOINT_DONE}); --resume never starts from step 0")
    return path


def unfinished_run(cfg: RunConfig, run_dir: Path) -> tuple[str, str] | tuple[None, None]:
    """(checkpoint, the run it comes from) when the newest earlier run beside `run_dir` with `cfg`'s config and
    settings did not complete: its latest whole checkpoint, or the one it had itself resumed from. (None, None)
    when there is none, or when the newest completed (or is running)."""
    runs = []
    for manifest_path in run_dir.parent.glob("*/manifest.json"):
        if manifest_path.parent == run_dir:
            continue
        try:
            manifest = json.loads(manifest_path.read_text())
            settings = manifest["settings"]
            if manifest.get("config_name") == cfg.run_name() and all(
                    settings.get(name) == getattr(cfg, name) for name in MUST_MATCH):
                runs.append((manifest_path.stat().st_mtime, manifest_path.parent.name, manifest))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a folder that is no run, or a damaged manifest: not one to resume
    if not runs:
        return None, None
    _, name, newest = max(runs, key=lambda found: found[0])
    if newest.get("status") not in UNFINISHED:
        return None, None
    checkpoint = last_whole_checkpoint(newest["settings"].get("output_dir") or "") or newest.get("resumed_from")
    return (checkpoint, name) if checkpoint and (Path(checkpoint) / CHECKPOINT_DONE).is_file() else (None, None)
