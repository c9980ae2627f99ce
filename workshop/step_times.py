"""steps.jsonl: the wall time of every optimizer step, one JSON line each, written and flushed as it happens.

    {"step": 12, "seconds": 0.4183, "samples": 8, "tokens": 1093}

step: the Trainer's global step; seconds: wall time since the previous step ended (the first: since training
began); samples: rows of this optimizer step over all processes (left out on an epoch's last step when the epoch
does not divide into whole steps: that step holds fewer rows, or rows repeated to fill it); tokens: real
(unpadded) tokens of this step over all processes. An evaluation or checkpoint save between two steps is not the next step's time: the clock starts
again when it ends. A job that dies keeps every line written before it died, so its steady state can still be read.
Only the main process writes (as for manifest.json).
"""
import json
import time
from pathlib import Path

from transformers import TrainerCallback

from workshop.run_files import append_line


class StepTimesCallback(TrainerCallback):
    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self.since = None  # when the clock for the next step started
        self.tokens = 0
        self.rows_per_step = None
        self.steps_per_epoch = None  # set when the epoch's last step is not a whole one

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.since = time.perf_counter()
        self.tokens = state.num_input_tokens_seen or 0  # a resumed run counts on from its checkpoint
        self.rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        try:
            rows, batches = len(train_dataloader.dataset), len(train_dataloader)
        except (AttributeError, TypeError):  # no dataloader, or no length: every step counted whole
            return
        if rows % self.rows_per_step:
            self.steps_per_epoch = -(-batches // args.gradient_accumulation_steps)

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        seconds, self.since = now - self.since, now
        if not self.enabled:
            return
        record = {"step": state.global_step, "seconds": round(seconds, 6)}
        if not self.steps_per_epoch or state.global_step % self.steps_per_epoch:
            record["samples"] = self.rows_per_step
        seen = state.num_input_tokens_seen or 0
        if seen:  # counted only with include_num_input_tokens_seen, which workshop.train always sets
            record["tokens"], self.tokens = seen - self.tokens, seen
        append_line(self.path, json.dumps(record))

    # the Trainer evaluates and saves after on_step_end: that time belongs to no training step
    def on_evaluate(self, args, state, control, **kwargs):
        self.since = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        self.since = time.perf_counter()
