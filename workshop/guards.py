"""Three ways a run ends early that must not waste the job: a lost rank, a diverged loss, a full disk.

Each gives the manifest a status of its own (`rank lost`, `diverged`, `disk full`), one line that says what to
do, and leaves the output folder so that a rerun or requeue resumes from a checkpoint that is whole.
"""
import errno
import math
import os
import shutil
import traceback
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from workshop.config import WorkshopError

# A checkpoint is whole once the Trainer has written its trainer_state.json: it is the last file it writes.
CHECKPOINT_DONE = "trainer_state.json"


class RunStopped(WorkshopError):
    """The run stopped early for a reason with its own manifest status and exit code."""

    def __init__(self, status: str, code: int, message: str, **fields):
        super().__init__(message)
        self.status, self.code, self.fields = status, code, fields


# ------------------------------------------------------------------------------------------------ a lost rank
# Words the communication libraries use when a peer is gone: gloo (CPU) reports the closed socket, NCCL (GPU)
# its watchdog or a failed collective, torch the timeout of a collective (--dist-timeout).
LOST_PEER = ("connection closed by peer", "connection reset by peer", "broken pipe", "timed out",
             "nccl error", "ncclremoteerror", "ncclsystemerror", "watchdog", "socket closed", "no route to host",
             "connection refused")


def is_lost_rank(err: BaseException) -> bool:
    """True for the error a surviving rank gets when another rank (or its node) died."""
    dist_error = getattr(torch.distributed, "DistError", ())
    if dist_error and isinstance(err, dist_error):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(words in text for words in LOST_PEER) and \
        ("gloo" in text or "nccl" in text or "store" in text or "timed out" in text or "pair.cc" in text)


def lost_rank_stop(err: BaseException, timeout_s: int) -> RunStopped:
    first = str(err).strip().splitlines()[0].split(". ")[0][:300] if str(err).strip() else type(err).__name__
    return RunStopped("rank lost", 4, f"another rank of this run is gone (its process or node died; this rank "
                      f"waited at most --dist-timeout {timeout_s} s): {first}. Every rank's output is in the "
                      "run folder's train.out; resubmit to resume from the last checkpoint")


# ------------------------------------------------------------------------------------------- a diverged loss
class DivergenceCallback(TrainerCallback):
    """Stops the training when the loss has diverged, before a broken model is saved or trained on for hours.

    Diverged: `patience` logged losses in a row that are NaN or inf, or (DeepSpeed fp16) `patience` optimizer
    steps in a row skipped with the loss scale already at its minimum (every step overflows, nothing trains).
    """

    def __init__(self, patience: int):
        self.patience = patience
        self.bad_losses = 0
        self.collapsed_steps = 0
        self.last_finite_step = 0
        self.trainer = None  # set by train.py: its DeepSpeed engine, if any, holds the fp16 loss scale
        self._skipped = 0
        self.reason = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if not isinstance(loss, (int, float)):
            return
        if math.isfinite(loss):
            self.bad_losses, self.last_finite_step = 0, state.global_step
            return
        self.bad_losses += 1
        control.should_save = False  # never a checkpoint of weights that gave a NaN/inf loss
        if self.bad_losses >= self.patience:
            self._stop(control, f"training loss {loss} at step {state.global_step} "
                                f"({self.bad_losses} logged losses in a row not finite)")

    def on_step_end(self, args, state, control, **kwargs):
        engine = getattr(self.trainer, "deepspeed", None)
        scale, floor = loss_scale(getattr(engine, "optimizer", None))
        skipped = getattr(engine, "skipped_steps", None)
        if scale is None or floor is None or skipped is None:
            return  # not DeepSpeed fp16 with a dynamic loss scale: none to watch
        if skipped > self._skipped and scale <= floor:
            self.collapsed_steps += 1
        else:
            self.collapsed_steps = 0
        self._skipped = skipped
        if self.collapsed_steps >= self.patience:
            self._stop(control, f"fp16 loss scale at its minimum {floor} and {self.collapsed_steps} steps in a row "
                                f"skipped for overflow (step {state.global_step})")

    def _stop(self, control, reason):
        if self.reason is None:
            self.reason = reason
            print(f"[workshop] the loss diverged: {reason}; stopping", flush=True)
        control.should_training_stop = True
        control.should_save = False


def loss_scale(optimizer):
    """(current fp16 loss scale, its floor) of a DeepSpeed optimizer, or (None, None) when the scale is static or
    absent. DeepSpeed 0.19 keeps them in ZeRO 1-3's `loss_scaler` (cur_scale, min_scale) and in stage 0's
    FP16_Optimizer `loss_scale_config` (cur_scale, min_loss_scale)."""
    scaler = getattr(optimizer, "loss_scaler", None)
    if scaler is not None and getattr(scaler, "dynamic", False):
        return scaler.cur_scale, scaler.min_scale
    config = getattr(optimizer, "loss_scale_config", None)
    if config is not None and getattr(config, "dynamic_loss_scale", False):
        return config.cur_scale, config.min_loss_scale
    return None, None


def set_aside_after(output_dir, step: int, label: str) -> list[str]:
    """Rename checkpoint-N with N >= step to LABEL-checkpoint-N: the Trainer's resume never picks them, and
    nothing is deleted (a user may still want to look)."""
    moved = []
    for path in sorted(Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")):
        number = path.name.rsplit("-", 1)[-1]
        if number.isdigit() and int(number) >= step:
            target = path.with_name(f"{label}-{path.name}")
            shutil.rmtree(target, ignore_errors=True)
            path.rename(target)
            moved.append(target.name)
    return moved


def diverged_stop(guard: DivergenceCallback, output_dir, learning_rate: float, is_main: bool) -> RunStopped:
    # A checkpoint's weights are the ones after its step; they are good only if a finite loss came after them.
    moved = set_aside_after(output_dir, guard.last_finite_step, "diverged") if is_main else []
    good = last_whole_checkpoint(output_dir)
    kept = f"last good checkpoint {good}" if good else "no good checkpoint yet"
    return RunStopped("diverged", 5, f"the loss diverged: {guard.reason}; {kept}"
                      f"{'; set aside: ' + ', '.join(moved) if moved else ''}. Lower the learning rate "
                      f"(--learning-rate {learning_rate:g} now, try {learning_rate / 10:g}) or train in bf16 "
                      "(--bf16) rather than fp16", last_good_checkpoint=good, set_aside=moved)


# ---------------------------------------------------------------------------------------------- a full disk
def is_disk_full(err: BaseException, output_dir) -> bool:
    """ENOSPC (or EDQUOT, a quota) in the exception's chain; or a checkpoint write that failed on a full disk:
    torch.save reports ENOSPC only as `[enforce fail at inline_container.cc] unexpected pos ...`."""
    seen = err
    while seen is not None:
        text = str(seen).lower()
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT) or \
                "no space left on device" in text or "disk quota exceeded" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    writing = any(frame.f_code.co_name in CHECKPOINT_WRITERS for frame, _ in traceback.walk_tb(err.__traceback__))
    return writing and os.path.isdir(output_dir) and _nearly_full(output_dir)


CHECKPOINT_WRITERS = ("_save_checkpoint", "save_checkpoint", "save_model", "_save")


def _nearly_full(path) -> bool:
    usage = shutil.disk_usage(path)
    return usage.free < max(2**20, usage.total // 100)  # under 1 MiB, or under 1% of the file system


def partial_checkpoints(output_dir) -> list[Path]:
    return [path for path in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
            if path.is_dir() and not (path / CHECKPOINT_DONE).is_file()]


def last_whole_checkpoint(output_dir) -> str | None:
    """The newest checkpoint-N the Trainer finished writing, or None."""
    whole = [path for path in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
             if path.is_dir() and path.name.rsplit("-", 1)[-1].isdigit() and (path / CHECKPOINT_DONE).is_file()]
    return str(max(whole, key=lambda path: int(path.name.rsplit("-", 1)[-1]))) if whole else None


def set_aside_partial(output_dir) -> list[str]:
    """Remove the checkpoints a failed write left half-done (their space is what the next attempt needs)."""
    removed = []
    for path in partial_checkpoints(output_dir):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def disk_full_stop(err: BaseException, output_dir, is_main: bool) -> RunStopped:
    removed = set_aside_partial(output_dir) if is_main else []
    good = last_whole_checkpoint(output_dir)
    free = shutil.disk_usage(output_dir).free / 2**20 if os.path.isdir(output_dir) else float("nan")
    kept = f"{good} is whole and a rerun resumes from it" if good else "no whole checkpoint yet"
    return RunStopped("disk full", 6, f"the disk under {output_dir} is full ({free:.0f} MiB free) while writing "
                      f"a checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                      f"{'removed the partial ' + ', '.join(removed) + '; ' if removed else ''}{kept}. Free space "
                      "(or point --output-dir at a larger disk) and resubmit",
                      last_good_checkpoint=good, removed_partial=removed)


def save_final(trainer, tokenizer, output_dir, is_main: bool):
    """The trained model in <output_dir>/final, or, on a full disk, no final/ at all: a half-written one would be
    scored, or loaded by workshop.generate, as if it were the model. The training itself is done by then."""
    from workshop.model import save_model

    final = Path(output_dir) / "final"
    try:
        if hasattr(trainer.model, "peft_config"):  # --peft: the adapter alone, gathered from ZeRO 3's partitions
            from workshop.peft_model import save_adapter

            save_adapter(trainer.model, tokenizer, final, is_main)
        elif getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "shards_itself", False):
            # under ZeRO-3 (or FSDP2) each process holds a slice of each large tensor: the Trainer gathers them
            # (stage3_gather_16bit_weights_on_model_save); the model's own save_pretrained wrote Size([0]) tensors
            trainer.save_model(str(final))
        else:
            save_model(trainer.model, tokenizer, final)
    except Exception as err:
        if not is_disk_full(err, output_dir):
            raise
        if is_main:
            shutil.rmtree(final, ignore_errors=True)
        good = last_whole_checkpoint(output_dir)
        free = shutil.disk_usage(output_dir).free / 2**20
        then = (f"--resume auto goes on from {good} and saves it" if good else
                "there is no checkpoint to go on from (--save-strategy no): the training runs again")
        raise RunStopped("disk full", 6, f"the disk under {output_dir} is full ({free:.0f} MiB free) while saving "
                         f"the final model after step {trainer.state.global_step} ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]}); removed the partial final/. Free space (or point "
                         f"--output-dir at a larger disk) and resubmit: {then}",
                         last_good_checkpoint=good, removed_partial=["final"] if is_main else []) from err

