"""Lesson 3: lesson 2's DeepSpeed fine-tune on several GPUs, one process per GPU (weak scaling).

    deepspeed --num_gpus=4 deepspeed_multi_gpu/train.py --samples-per-gpu 10000
    deepspeed --num_gpus=2 deepspeed_multi_gpu/train.py --ds-config deepspeed_single_gpu/configs/stage3.json
    torchrun --nproc_per_node 2 deepspeed_multi_gpu/train.py --profile tiny --samples-per-gpu 100

Weak scaling: every GPU gets the same amount of data, so the dataset is `--samples-per-gpu` times the number
of processes (WORLD_SIZE, set by the launcher) and a perfect scale-out keeps the run time flat as GPUs are
added. The DeepSpeed configs are lesson 2's (deepspeed_single_gpu/configs/), stage 0 by default; the model is
bloom-1b7 unless --model or --profile says otherwise. `--global-batch-size B` fixes the batch across all GPUs
(gradient accumulation makes up the rest) instead of the per-GPU batch.
"""
# New Code #: the lesson's own flags, and WORLD_SIZE from the launcher
import argparse
import os
# End New Code #
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from workshop.train import main  # noqa: E402

# New Code #: the data size follows the number of processes; lesson 2's DeepSpeed configs, stage 0 by default
from workshop.config import WorkshopError, parse_args  # noqa: E402
from workshop.train import fail  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LESSON = "deepspeed_multi_gpu"
DEFAULTS = dict(model="bigscience/bloom-1b7",
                deepspeed=os.path.relpath(ROOT / "deepspeed_single_gpu" / "configs" / "stage0.json"))


def lesson_argv(argv, world_size):
    """Turn the lesson's own flags into workshop.train flags (the rest pass through unchanged)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--samples-per-gpu", type=int, default=10_000)
    parser.add_argument("--global-batch-size", type=int, default=None)
    ours, rest = parser.parse_known_args(argv)
    if any(arg.split("=")[0] in ("--subset-size", "--subset") for arg in rest):
        raise WorkshopError("this lesson sizes the data with --samples-per-gpu (dataset = samples x GPUs), "
                            "not --subset-size")
    if ours.samples_per_gpu < 1:
        raise WorkshopError(f"--samples-per-gpu must be at least 1 (got {ours.samples_per_gpu})")
    rest += ["--subset-size", str(ours.samples_per_gpu * world_size)]
    if ours.global_batch_size is not None:
        per_device = parse_args(rest, lesson=LESSON, **DEFAULTS).per_device_train_batch_size
        step = per_device * world_size  # examples one micro-step takes across all processes
        if ours.global_batch_size % step:
            raise WorkshopError(f"--global-batch-size {ours.global_batch_size} is not a multiple of "
                                f"{world_size} processes x {per_device} per device = {step}")
        rest += ["--gradient-accumulation-steps", str(ours.global_batch_size // step)]
    return rest, ours.samples_per_gpu


def check_data_size(argv, samples_per_gpu, world_size):
    """Fail before loading a model when the data cannot give every process its share."""
    cfg = parse_args(argv, lesson=LESSON, **DEFAULTS)
    if cfg.data == "hub":
        return  # SQuAD's 87,599 training examples: load_squad checks the rare over-large request
    from workshop.data import load_squad
    try:
        load_squad(cfg.subset_size, source=cfg.data)
    except WorkshopError as err:
        raise WorkshopError(f"--samples-per-gpu {samples_per_gpu} x {world_size} processes = {cfg.subset_size} "
                            f"examples, more than --data {cfg.data} has; use a smaller --samples-per-gpu "
                            f"({err})") from None


# End New Code #

if __name__ == "__main__":
    # New Code #: the same entry as lessons 1 and 2; only the data size and the number of processes change
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by deepspeed, torchrun or the srun script
    try:
        argv, samples_per_gpu = lesson_argv(sys.argv[1:], world_size)
        check_data_size(argv, samples_per_gpu, world_size)
    except WorkshopError as err:
        fail(err)
    main(argv, lesson=LESSON, require_deepspeed=True, **DEFAULTS)
    # End New Code #
