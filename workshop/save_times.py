"""The manifest's `checkpoint_saves`: each checkpoint's step, save seconds and bytes on disk, as the run saved it.

    "checkpoint_saves": [{"step": 2, "seconds": 0.0841, "bytes": 1754012}, ...]

seconds: from the end of the step (or of its log or evaluation, whichever came last) to the Trainer's on_save: the
whole checkpoint (weights, optimizer states, scheduler, RNG and trainer state; DeepSpeed's ZeRO shards or FSDP2's
DCP state beside them) and its seal (checkpoint_seal.py). The callback is added last, so the other callbacks'
on_log work is not counted. bytes: every file of the checkpoint folder as this process's node sees it after the
save (several nodes without a shared disk: this node's share). A resumed run appends to its earlier attempts' list.
"""
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


class SaveTimesCallback(TrainerCallback):
    def __init__(self, run):
        self.run, self.since = run, time.perf_counter()

    def _restart(self, args, state, control, **kwargs):
        self.since = time.perf_counter()

    on_step_end = on_log = on_evaluate = _restart  # the Trainer logs, evaluates and then saves, after the step

    def on_save(self, args, state, control, **kwargs):
        seconds = time.perf_counter() - self.since
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        record = {"step": state.global_step, "seconds": round(seconds, 4), "bytes": folder_bytes(folder)}
        self.run.update(checkpoint_saves=[*(self.run.manifest.get("checkpoint_saves") or []), record])
