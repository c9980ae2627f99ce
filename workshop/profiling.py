"""--torch-profiler: where a few steady optimizer steps spend their time, kept in the run folder.

torch.profiler records STEPS optimizer steps after the first ones (start-up, torch.compile's first graphs and the
allocator's warm-up are over by then), on the CPU and on the GPU when there is one, and writes two files:
    profile_top.txt         the operators and kernels by their own time, the biggest first (a table to read)
    profile_trace.json.gz   the whole timeline, for chrome://tracing or https://ui.perfetto.dev
Only rank 0 profiles. The profiled steps run a little slower (the profiler's own work); their speed figures are
not the run's.
"""
import gzip
import shutil
from pathlib import Path

import torch
from transformers import TrainerCallback

STEPS = 3
FIRST = 5  # the first profiled optimizer step, or as late as the run allows


class ProfilerCallback(TrainerCallback):
    def __init__(self, run_dir, enabled=True):
        self.dir, self.enabled, self.profiler, self.window = Path(run_dir), enabled, None, None

    def on_train_begin(self, args, state, control, **kwargs):
        first = max(0, min(FIRST, state.max_steps - STEPS))
        self.window = (first, first + min(STEPS, state.max_steps))

    def on_step_begin(self, args, state, control, **kwargs):
        if self.enabled and self.profiler is None and state.global_step == self.window[0]:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self.profiler is not None and state.global_step == self.window[1]:
            self.profiler.stop()
            self.write()
            self.profiler = None

    def write(self):
        profiler, steps = self.profiler, self.window[1] - self.window[0]
        sort_by = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        averages = profiler.key_averages()
        # torch.compile's own work (tracing, autotuning) shows as "... (dynamo_timed)" events: then the steps were
        # not steady, e.g. a batch of a new shape compiled the model again, and the table is mostly compilation
        compiling = sum(e.count for e in averages if e.key.endswith("(dynamo_timed)"))
        warning = (f"warning: torch.compile was compiling during these steps ({compiling} compiler events): this "
                   "is not a steady step's profile\n") if compiling else ""
        table = averages.table(sort_by=sort_by, row_limit=40)
        (self.dir / "profile_top.txt").write_text(f"{warning}torch.profiler over {steps} optimizer steps, after "
                                                  f"step {self.window[0]}; sorted by {sort_by}\n{table}\n")
        if warning:
            print(f"[workshop] {warning.strip()}", flush=True)
        trace = self.dir / "profile_trace.json"
        profiler.export_chrome_trace(str(trace))
        with trace.open("rb") as raw, gzip.open(f"{trace}.gz", "wb") as packed:
            shutil.copyfileobj(raw, packed)
        trace.unlink()
        print(f"[workshop] profile of steps {self.window[0] + 1}-{self.window[1]}: {self.dir}/profile_top.txt, "
              f"{trace}.gz", flush=True)
