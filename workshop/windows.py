"""Which part of a run is training, and which windows inside the process's life must stay out of its time and
memory figures (psrecord samples the whole process and its children; steps.jsonl times only the steps).

manifest.json:
    "training_window": {"start": <unix s>, "end": <unix s>}       from the Trainer's train begin to its train end
    "excluded_windows": [{"what": "deepspeed_ops", "start": <unix s>, "end": <unix s>, "seconds": 41.2,
                          "compiled": true, "why": "..."}, {"what": "evaluation", ...}, ...]
A DeepSpeed op that is compiled (not merely loaded) runs the C++ compiler as this process's child, gigabytes of
host memory that are not the training's: `compiled` says whether that happened (`python -m workshop.prebuild_ops`,
which the walk-through runs at set-up, makes it a load of a second or two).
"""
import os
import time
from contextlib import contextmanager

from transformers import TrainerCallback

from workshop.deepspeed.ops import build, extensions_dir
from workshop.deepspeed.setup import load_ops


def add_window(run, what: str, start: float, end: float, why: str, **fields):
    record = {"what": what, "start": round(start, 3), "end": round(end, 3), "seconds": round(end - start, 2),
              **fields, "why": why}
    run.update(excluded_windows=[*run.manifest.get("excluded_windows", []), record])


@contextmanager
def excluded_window(run, what: str, why: str):
    start, built = time.time(), _built_ops()
    try:
        yield
    finally:
        # a compile writes a new shared library into the build folder; loading a built op writes none (its ninja
        # check runs as a child too, so the children's CPU time cannot tell them apart)
        add_window(run, what, start, time.time(), why, compiled=_built_ops() != built)


def _built_ops() -> dict:
    return {str(path): path.stat().st_mtime_ns for path in extensions_dir().rglob("*.so")}


def load_ops_outside_training(run, ds_config: dict):
    """DeepSpeed's ops for this config, and with several processes on a CPU its shared-memory collectives (which
    deepspeed.init_distributed would otherwise build later, inside the run), in a window marked as excluded."""
    with excluded_window(run, "deepspeed_ops", "loading or compiling DeepSpeed's ops is set-up, not training"):
        load_ops(ds_config)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and _cpu_accelerator():
            build("deepspeed_shm_comm")


def _cpu_accelerator() -> bool:
    from workshop.deepspeed.config import quiet_deepspeed

    with quiet_deepspeed():
        from deepspeed.accelerator import get_accelerator

        return get_accelerator().device_name() == "cpu"


class WindowsCallback(TrainerCallback):
    """The training window, and each evaluation inside it as an excluded window."""

    def __init__(self, run):
        self.run = run
        self.started = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.time()
        self.run.update(training_window={"start": round(self.started, 3), "end": None})

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        seconds = (metrics or {}).get("eval_runtime")
        if self.started is not None and seconds:
            end = time.time()
            add_window(self.run, "evaluation", end - seconds, end, "evaluation is not a training step")

    def on_train_end(self, args, state, control, **kwargs):
        self.run.update(training_window={"start": round(self.started, 3), "end": round(time.time(), 3)})
