"""Where the time from launch to the first optimizer step goes: the manifest's `startup`.

Marks, in the order a run passes them (seconds since the first one present):
    launched          WORKSHOP_LAUNCHED_AT, set by slurm/common.sh when a script starts (or by benchmarks/bench.py)
    command_started   WORKSHOP_COMMAND_AT, set by common.sh just before it starts the command (bash, psrecord lookup)
    process_start     this interpreter started (after the `deepspeed` launcher's own interpreters, if any)
    imports_done      the flags are checked and workshop.train imported (torch, transformers): the run begins
    ops_loaded        DeepSpeed's ops loaded (DeepSpeed configs only)
    arguments_ready   TrainingArguments built (with DeepSpeed: the distributed set-up and DeepSpeed's import)
    model_built       the model exists (random init, a checkpoint read, or ZeRO-3's partitioned build)
    data_ready        loaded, tokenised, split (and packed)
    trainer_built     Trainer() returned
    engine_ready      the Trainer's on_train_begin: accelerate / DeepSpeed's engine and optimizer set up
    first_step_begin  the first optimizer step begins (workshop.speed's start-up ends here)
    first_step_done   it has ended (includes torch.compile's first compilation)
`phases_s` gives each mark's distance from the one before it, named after the later mark; `launcher` is
slurm/common.sh's WORKSHOP_LAUNCHER (`deepspeed` or `python`, lesson 2's scripts' `--launcher`), else null.
"""
import os
import time

import psutil
from transformers import TrainerCallback

ORDER = ("launched", "command_started", "process_start", "imports_done", "ops_loaded", "arguments_ready",
         "model_built", "data_ready", "trainer_built", "engine_ready", "first_step_begin", "first_step_done")
ENVIRONMENT_MARKS = (("launched", "WORKSHOP_LAUNCHED_AT"), ("command_started", "WORKSHOP_COMMAND_AT"))


def process_start() -> float:
    """When this process started (Unix time) to the clock tick. psutil's create_time adds the tick count to the
    boot time in whole seconds, so it can be most of a second off: as much as the phases measured here."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in ticks since boot
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, AttributeError, ValueError, IndexError):  # not Linux
        return psutil.Process().create_time()


class Startup:
    def __init__(self):
        self.marks = {}
        for name, variable in ENVIRONMENT_MARKS:
            try:
                self.marks[name] = float(os.environ[variable])
            except (KeyError, ValueError):
                pass
        self.marks["process_start"] = process_start()

    def begin(self):
        """The flags are checked and the training imported (workshop.entry). A second run in the same process starts
        afresh."""
        self.marks = {name: t for name, t in self.marks.items() if ORDER.index(name) <= ORDER.index("process_start")}
        self.mark("imports_done")

    def mark(self, name: str):
        self.marks.setdefault(name, time.time())  # the first time only: a resumed Trainer does not move it

    def summary(self) -> dict:
        order = sorted(self.marks.items(), key=lambda item: ORDER.index(item[0]))
        origin = order[0][1]
        phases = {later: round(t1 - t0, 2) for (_, t0), (later, t1) in zip(order, order[1:])}
        return {"origin": order[0][0], "launcher": os.environ.get("WORKSHOP_LAUNCHER"),
                "marks_s": {name: round(t - origin, 2) for name, t in order},
                "phases_s": phases, "total_s": round(order[-1][1] - origin, 2)}

    def callback(self, run) -> "StartupCallback":
        return StartupCallback(self, run)


class StartupCallback(TrainerCallback):
    """Records the Trainer's marks and writes `startup` into the manifest once the first step has ended."""

    def __init__(self, startup: Startup, run):
        self.startup, self.run = startup, run

    def on_train_begin(self, args, state, control, **kwargs):
        self.startup.mark("engine_ready")

    def on_step_begin(self, args, state, control, **kwargs):
        self.startup.mark("first_step_begin")

    def on_step_end(self, args, state, control, **kwargs):
        if "first_step_done" not in self.startup.marks:
            self.startup.mark("first_step_done")
            self.run.update(startup=self.startup.summary())


STARTUP = Startup()  # one per process: workshop.entry, workshop.train and the DeepSpeed plan mark it
