"""The lessons, in the order the workshop teaches them: the one index of what each lesson is made of. fill_tables,
the notebooks, runlog, submit, the shell scripts (through `python -m workshop.lessons ...`) and the tests read it
instead of lists of their own, and tests/test_registry.py fails when a lesson folder, script or notebook exists
that no lesson names, or a lesson names one that does not exist.

Each lesson's tables and figures live in its module (workshop/lessons/<name>.py), imported only when its tables
are first asked for, so a training that reads `LESSONS` for folder names loads no pandas or matplotlib.

    python -m workshop.lessons configs deepspeed_multi_gpu    # stage1 stage1_offload ... (for shell scripts)
    python -m workshop.lessons entry precision_and_checkpointing   # precision_and_checkpointing/train.py
    python -m workshop.lessons walkthrough                    # the walk-through, one command a line
"""

import importlib
import shlex
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Lesson:
    name: str  # the manifest's `lesson`, and the run-name prefix of its runs
    folder: str  # the lesson's folder in the repository: its entry (train.py), README, configs/
    notebook: str = ""  # its notebook in notebooks/
    tables: object = ()  # the name of the module whose TABLES it fills (or the Table definitions themselves)
    scripts: tuple = ()  # every file in slurm/ that belongs to it; the empty-folder message names the first
    # the walk-through (scripts/run_workshop.sh): each run a script with its leading arguments, then
    # `--profile <walkthrough_profile>` and `walkthrough_args`
    walkthrough: tuple = ()
    walkthrough_args: tuple = ()
    walkthrough_profile: str = "tiny"  # "laptop" where the lesson's memory effect needs model states to show
    configs: tuple = ()  # the DeepSpeed config names its runs use, in the order the lesson walks through them
    multi_process: bool = False  # its runs use several processes (a bare DeepSpeed .out of 2+ ranks lands here)

    @property
    def entry(self):
        return f"{self.folder}/train.py"

    def table_defs(self):
        if isinstance(self.tables, str):
            return importlib.import_module(self.tables).TABLES
        return self.tables

    def walkthrough_commands(self):
        """The walk-through's runs as argument lists: `bash` runs each from the repository root."""
        return [[*run, "--profile", self.walkthrough_profile, *self.walkthrough_args] for run in self.walkthrough]


# deepspeed_single_gpu/configs/<name>.json, in the order lesson 2 walks through them; lesson 3 compares six of them
ZERO_CONFIGS = ("stage0", "stage1", "stage1_offload", "stage2", "stage2_offload", "stage2_offload_nopin",
                "stage2_zenflow", "stage3", "stage3_offload", "stage3_offload_nopin", "stage3_offload_nvme")
ZERO_STAGES = ("stage0", "stage1", "stage2", "stage3")  # lesson 5 runs each in fp32, fp16 and bf16
ZERO_2GPU = ("stage1", "stage1_offload", "stage2", "stage2_offload", "stage3", "stage3_offload")
# NVMe offload needs libaio and a fast local disk: the CPU walk-through leaves it to the lesson's GPU reference
ZERO_WALKTHROUGH = tuple(config for config in ZERO_CONFIGS if config != "stage3_offload_nvme")

LESSONS = (
    Lesson("baseline", folder="baseline", notebook="01_baseline.ipynb", tables="workshop.lessons.baseline",
           scripts=("slurm/baseline.slurm",), walkthrough=(("slurm/baseline.slurm",),)),
    Lesson("deepspeed_single_gpu", folder="deepspeed_single_gpu", notebook="02_zero_single_gpu.ipynb",
           tables="workshop.lessons.deepspeed_single_gpu", configs=ZERO_CONFIGS,
           scripts=tuple(f"slurm/{c}.slurm" for c in ZERO_CONFIGS),
           # the tiny model: the laptop profile shows ZeRO in measured host memory, but nine such runs took over
           # 15 minutes on 2 cores (2026-12-06), past the walk-through's 20; the engine's model-state bytes show it
           walkthrough=tuple((f"slurm/{c}.slurm",) for c in ZERO_WALKTHROUGH)),
    # without GPUs: two processes on the CPU (and one, for weak scaling's first point), 200 examples each, one epoch:
    # twelve optimizer steps, enough for a steady state after the warm-up (20 examples made 2: no timed answer)
    Lesson("deepspeed_multi_gpu", folder="deepspeed_multi_gpu", notebook="03_multi_gpu.ipynb",
           tables="workshop.lessons.deepspeed_multi_gpu", configs=ZERO_2GPU, multi_process=True,
           scripts=("slurm/multi_gpu_weak_scaling.slurm", "slurm/submit_zero_2gpu.sh", "slurm/multi_gpu_zero.slurm",
                    "slurm/submit_weak_scaling.sh", "slurm/multi_node.slurm"),
           walkthrough=(("slurm/multi_gpu_weak_scaling.slurm", "--gpus", "1"),
                        ("slurm/multi_gpu_weak_scaling.slurm", "--gpus", "2"),
                        *(("slurm/multi_gpu_zero.slurm", c) for c in ZERO_2GPU)),
           walkthrough_args=("--samples-per-gpu", "200", "--num-train-epochs", "1")),
    Lesson("make_it_fast", folder="make_it_fast", notebook="04_make_it_fast.ipynb",
           tables="workshop.lessons.make_it_fast", scripts=("slurm/fast.slurm",),
           walkthrough=(("slurm/fast.slurm",),)),
    # on a CPU: no fp16 (it needs a GPU); ten steps a run, the runs notebook 05 reads
    Lesson("precision_and_checkpointing", folder="precision_and_checkpointing",
           notebook="05_precision_and_checkpointing.ipynb", tables="workshop.lessons.precision_and_checkpointing",
           configs=ZERO_STAGES,
           scripts=("slurm/precision.slurm", "slurm/checkpointing.slurm", "slurm/max_batch.slurm",
                    "slurm/submit_precision.sh"),
           walkthrough=(("slurm/precision.slurm", "none", "fp32"), ("slurm/precision.slurm", "none", "bf16"),
                        ("slurm/precision.slurm", "stage2", "fp32"), ("slurm/precision.slurm", "stage2", "bf16"),
                        ("slurm/checkpointing.slurm", "on", "none", "fp32"),
                        ("slurm/checkpointing.slurm", "on", "stage2", "fp32")),
           walkthrough_args=("--max-steps", "10")),
    # on a CPU: full fine-tuning and LoRA under the plain Trainer, and LoRA under ZeRO 3 (its adapter gathered from
    # the partitions when saved); eight steps each. QLoRA needs bitsandbytes: its run is left to a GPU.
    Lesson("lora", folder="lora", notebook="06_lora.ipynb", tables="workshop.lessons.lora",
           configs=("stage2", "stage2_offload", "stage3", "stage3_offload"),
           scripts=("slurm/lora.slurm", "slurm/qlora.slurm"),
           walkthrough=(("slurm/lora.slurm", "none", "--peft", "none"), ("slurm/lora.slurm", "none"),
                        ("slurm/lora.slurm", "stage3")),
           walkthrough_args=("--max-steps", "8", "--save-strategy", "no")),
    # lesson 7: FSDP2 beside the ZeRO config it maps to, two processes each (GPUS=2), ten steps (a steady state)
    Lesson("fsdp", folder="fsdp", notebook="07_fsdp.ipynb", tables="workshop.lessons.fsdp",
           configs=("stage2", "stage3", "stage3_offload"), multi_process=True, scripts=("slurm/fsdp.slurm",),
           walkthrough=(("slurm/fsdp.slurm", "full_shard"), ("slurm/fsdp.slurm", "stage3")),
           walkthrough_args=("--max-steps", "10", "--eval-strategy", "no", "--save-strategy", "no")),
)
BY_NAME = {lesson.name: lesson for lesson in LESSONS}
FOLDERS = tuple(dict.fromkeys(lesson.folder for lesson in LESSONS))  # the code every lesson runs from
# slurm/ files that serve every lesson rather than one
SHARED_SCRIPTS = ("slurm/common.sh", "slurm/doctor.slurm")  # the doctor checks a node for every lesson


USAGE = ("usage: python -m workshop.lessons configs LESSON | entry LESSON | walkthrough [LESSON...]\n"
         f"  LESSON: {', '.join(BY_NAME)}")


def main(argv=None):
    """Answers for shell scripts, one word or line each, so they keep no lesson list of their own."""
    argv = sys.argv[1:] if argv is None else argv
    query, names = (argv[0], argv[1:]) if argv else (None, [])
    unknown = [name for name in names if name not in BY_NAME]
    if query not in ("configs", "entry", "walkthrough") or unknown or (query != "walkthrough" and len(names) != 1):
        print(f"error: unknown lesson {unknown[0]!r}\n{USAGE}" if unknown else USAGE, file=sys.stderr)
        return 2
    if query == "configs":
        print(" ".join(BY_NAME[names[0]].configs))
    elif query == "entry":
        print(BY_NAME[names[0]].entry)
    else:
        for lesson in [BY_NAME[name] for name in names] or LESSONS:
            for command in lesson.walkthrough_commands():
                print(lesson.name, shlex.join(command))
    return 0
