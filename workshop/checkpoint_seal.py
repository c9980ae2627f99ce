"""Resume only from checkpoints this user's own runs wrote.

Resuming loads a checkpoint with pickle (DeepSpeed's engine calls `torch.load(weights_only=False)`), and a pickle
can run any code: a file planted in a shared output folder would run as you. So after each save the run seals the
checkpoint: `workshop_seal.json` records the owner and each file's size and modification time. A resume refuses a
checkpoint with a file that another user owns, that is a symbolic link, or that changed or appeared after the seal.
A checkpoint without a seal (written before seals existed) must at least be yours and writable by you alone.

Size and modification time, not a digest: hashing a 7b1 checkpoint's ~80 GB would add minutes to every save, and
nobody but the owner can rewrite a file and set its modification time back.
"""
import json
import os
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from workshop.errors import WorkshopError

SEAL = "workshop_seal.json"


def _sealed_files(checkpoint: Path):
    # Each rank writes its own rng_state_N.pth, maybe after the seal; the Trainer loads those with weights_only.
    return sorted(path for path in checkpoint.rglob("*")
                  if path.is_file() and path.name != SEAL and not path.name.startswith("rng_state"))


def seal(checkpoint) -> None:
    checkpoint = Path(checkpoint)
    files = {str(path.relative_to(checkpoint)): [path.stat().st_size, path.stat().st_mtime_ns]
             for path in _sealed_files(checkpoint)}
    partial = checkpoint / f".{SEAL}.tmp"
    partial.write_text(json.dumps({"uid": os.getuid(), "files": files}, indent=1) + "\n")
    partial.replace(checkpoint / SEAL)


class SealCallback(TrainerCallback):
    """Seals each checkpoint once written. DeepSpeed's save ends in a barrier, so every rank's shards are there;
    each node's first process seals its own copy of the folder (nodes need not share a disk)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_local_process_zero:
            seal(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")


def why_untrusted(checkpoint) -> str | None:
    """Why `checkpoint` must not be loaded, or None when this user's run wrote it and nothing changed since."""
    checkpoint, uid = Path(checkpoint), os.getuid()
    for path in [checkpoint, *checkpoint.rglob("*")]:
        info = path.lstat()
        if info.st_uid != uid:
            return f"{path} belongs to user id {info.st_uid}, not to you ({uid})"
        if path.is_symlink():
            return f"{path} is a symbolic link"
    if not (checkpoint / SEAL).is_file():
        writable = [path for path in [checkpoint, *checkpoint.rglob("*")] if path.lstat().st_mode & 0o022]
        return f"{writable[0]} has no seal and others may write to it" if writable else None
    try:
        record = json.loads((checkpoint / SEAL).read_text())
        recorded = {name: tuple(value) for name, value in record["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"its {SEAL} is damaged"
    for path in _sealed_files(checkpoint):
        name = str(path.relative_to(checkpoint))
        if name not in recorded:
            return f"{path} appeared after the run sealed the checkpoint"
        if recorded.pop(name) != (path.stat().st_size, path.stat().st_mtime_ns):
            return f"{path} changed after the run sealed the checkpoint"
    return f"{checkpoint / next(iter(recorded))} is gone since the run sealed the checkpoint" if recorded else None


def check_trusted(checkpoint) -> None:
    """Raise WorkshopError when `checkpoint` must not be resumed from (see why_untrusted)."""
    why = why_untrusted(checkpoint)
    if why:
        raise WorkshopError(f"refusing to resume from {checkpoint}: {why}. Resuming unpickles the checkpoint, "
                            "which can run code; resume only from checkpoints your own runs wrote (move this one "
                            "away to start from step 0)")
