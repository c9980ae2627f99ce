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
# New Code #: WORLD_SIZE from the launcher
import os
# End New Code #
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from workshop.entry import main  # noqa: E402

# New Code #: the data size follows the number of processes (lesson 2's configs, bloom-1b7: its recipe)
from workshop.errors import WorkshopError  # noqa: E402


class WeakScaling:
    """The lesson's own flags, parsed with the training's in one pass (workshop.config.parse_args)."""

    def __init__(self, world_size):
        self.world_size = world_size

    def add_to(self, parser):
        group = parser.add_argument_group("weak scaling (this lesson)")
        group.add_argument("--samples-per-gpu", type=int, default=10_000,
                           help="examples per process: the dataset is this times WORLD_SIZE (default: 10000)")
        group.add_argument("--global-batch-size", type=int, default=None,
                           help="examples per optimizer step across all processes; gradient accumulation makes up "
                                "the rest (default: the per-device batch and --gradient-accumulation-steps)")

    def apply(self, settings, given):
        """The data size and (with --global-batch-size) the accumulation from the processes; returns the settings."""
        samples, world_size = given["samples_per_gpu"], self.world_size
        if "subset_size" in given:
            raise WorkshopError("this lesson sizes the data with --samples-per-gpu (dataset = samples x GPUs), "
                                "not --subset-size")
        if samples < 1:
            raise WorkshopError(f"--samples-per-gpu must be at least 1 (got {samples})")
        settings = {**settings, "subset_size": samples * world_size}
        per_device = settings["per_device_train_batch_size"]
        if given["global_batch_size"] is not None and per_device >= 1:  # below 1: validation says so
            step = per_device * world_size  # examples one micro-step takes across all processes
            if given["global_batch_size"] % step:
                raise WorkshopError(f"--global-batch-size {given['global_batch_size']} is not a multiple of "
                                    f"{world_size} processes x {per_device} per device = {step}")
            settings["gradient_accumulation_steps"] = given["global_batch_size"] // step
        check_data_size(settings, samples, world_size)
        return settings


def check_data_size(settings, samples_per_gpu, world_size):
    """Fail before loading a model when the data cannot give every process its share."""
    data, subset_size = settings.get("data", "hub"), settings["subset_size"]
    if data == "hub" or not (data == "embedded" or os.path.isfile(data)):
        return  # SQuAD's 87,599 training examples (load_squad checks the rare over-large request); no file: see --data
    from workshop.data import load_squad
    try:
        load_squad(subset_size, source=data)
    except WorkshopError as err:
        raise WorkshopError(f"--samples-per-gpu {samples_per_gpu} x {world_size} processes = {subset_size} "
                            f"examples, more than --data {data} has; use a smaller --samples-per-gpu "
                            f"({err})") from None


# End New Code #

if __name__ == "__main__":
    # New Code #: the same entry as lessons 1 and 2; only the data size and the number of processes change
    main(lesson="deepspeed_multi_gpu", lesson_flags=WeakScaling(int(os.environ.get("WORLD_SIZE", "1"))))
