"""The lessons, in the order the workshop teaches them: the one registry that fill_tables, the notebooks, runlog,
submit, the shell scripts and the tests read instead of lists of their own.

Each lesson's tables and figures live in its module (workshop/lessons/<name>.py), imported only when its tables
are first asked for, so a training that reads `LESSONS` for folder names loads no pandas or matplotlib.

    python -m workshop.lessons configs deepspeed_multi_gpu    # stage1 stage1_offload ... (for shell scripts)
"""

import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Lesson:
    name: str  # the manifest's `lesson`, and the run-name prefix of its runs
    folder: str  # the lesson's folder in the repository (train.py, configs/)
    configs: tuple = ()  # the DeepSpeed config names its runs use, in the order the lesson walks through them
    tables: object = ()  # its Table definitions, or the name of the module whose TABLES they are
    scripts: tuple = ()  # the .slurm files a student runs for it (the empty-folder message names the first)
    multi_process: bool = False  # its runs use several processes (a bare DeepSpeed .out of 2+ ranks lands here)

    def table_defs(self):
        if isinstance(self.tables, str):
            return importlib.import_module(self.tables).TABLES
        return self.tables


# deepspeed_single_gpu/configs/<name>.json, in the order lesson 2 walks through them; lesson 3 compares six of them
ZERO_CONFIGS = ("stage0", "stage1", "stage1_offload", "stage2", "stage2_offload", "stage2_offload_nopin",
                "stage2_zenflow", "stage3", "stage3_offload", "stage3_offload_nopin", "stage3_offload_nvme")
ZERO_STAGES = ("stage0", "stage1", "stage2", "stage3")  # lesson 5 runs each in fp32, fp16 and bf16
ZERO_2GPU = ("stage1", "stage1_offload", "stage2", "stage2_offload", "stage3", "stage3_offload")

LESSONS = (
    Lesson("baseline", folder="baseline", tables="workshop.lessons.baseline", scripts=("slurm/baseline.slurm",)),
    Lesson("deepspeed_single_gpu", folder="deepspeed_single_gpu", configs=ZERO_CONFIGS,
           tables="workshop.lessons.deepspeed_single_gpu", scripts=tuple(f"slurm/{c}.slurm" for c in ZERO_CONFIGS)),
    Lesson("deepspeed_multi_gpu", folder="deepspeed_multi_gpu", configs=ZERO_2GPU, multi_process=True,
           tables="workshop.lessons.deepspeed_multi_gpu",
           scripts=("slurm/multi_gpu_weak_scaling.slurm", "slurm/submit_zero_2gpu.sh")),
    Lesson("make_it_fast", folder="baseline", tables="workshop.lessons.make_it_fast", scripts=("slurm/fast.slurm",)),
    Lesson("precision_and_checkpointing", folder="precision_and_checkpointing", configs=ZERO_STAGES,
           tables="workshop.lessons.precision_and_checkpointing",
           scripts=("slurm/precision.slurm", "slurm/checkpointing.slurm", "slurm/max_batch.slurm")),
)
BY_NAME = {lesson.name: lesson for lesson in LESSONS}
FOLDERS = tuple(dict.fromkeys(lesson.folder for lesson in LESSONS))  # the code every lesson runs from


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "configs" or argv[1] not in BY_NAME:
        print(f"usage: python -m workshop.lessons configs {{{','.join(BY_NAME)}}}", file=sys.stderr)
        return 2
    print(" ".join(BY_NAME[argv[1]].configs))
    return 0

