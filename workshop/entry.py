"""The training's command line: each lesson's train.py (and `python -m workshop.train`) calls main() here.

The flags are read and checked first, before torch and transformers load: a mistake is one `error:` line and exit
status 2 within a second. Only then does main() import the training (workshop.train), run its train() in a run
folder, and record how the run ended, whatever happens.
"""
import gc
import os
import signal
import sys
from contextlib import contextmanager

from workshop.config import RunConfig, parse_args
from workshop.errors import WorkshopError
from workshop.names import resolve_model


def fail(message, code=2):
    """An expected mistake: one line on stderr, no traceback, a distinct exit status."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def main(argv=None, lesson="baseline", require_deepspeed=False, lesson_flags=None, **lesson_defaults):
    try:
        cfg = parse_args(argv, lesson=lesson, require_deepspeed=require_deepspeed, lesson_flags=lesson_flags,
                         **lesson_defaults)
    except WorkshopError as err:
        fail(err)
    offline_without_hub(cfg)
    if argv is None:  # the command line: this process was started for this one training (a lesson's train.py)
        with one_training_process():
            run_training(cfg)
    else:  # a caller's process (the tests), which goes on afterwards: its garbage collector is left alone
        run_training(cfg)


@contextmanager
def one_training_process():
    """Keep Python's garbage collector off what the process imports and off its exit.

    CPython's cycle collector walks every object a process holds, and torch, transformers and their dependencies
    make about 750,000 at import: 8 full collections while they import and one more at the interpreter's exit. So
    the imports run with the collector off, what they made is frozen (gc.freeze: never walked again; it lives as long
    as the process anyway), and whatever is left at the end is frozen too: the process ends without a last walk.
    A 12-step tiny baseline took 5.9-6.4 CPU-s so, 7.9-9.5 without; a ZeRO-2 one under DeepSpeed's launcher 11.4-11.9
    and 13.6-15.8 (2 cores, 2026-12-07). Reference counting frees memory as before; only garbage in reference cycles
    among frozen objects stays until the process exits."""
    gc.disable()
    import workshop.train  # noqa: F401 (torch, transformers, peft, datasets: run_training's imports, made here)
    gc.freeze()
    gc.enable()
    try:
        yield
    finally:
        gc.freeze()


def offline_without_hub(cfg: RunConfig):
    """A model or data set that may come from the Hub, on a node that cannot reach it: huggingface_hub would retry
    for a minute or more (99 s for an unknown --model) before the clear error. One look at the endpoint (3 s at
    most) decides; unreachable, this run reads the Hugging Face cache alone (HF_HUB_OFFLINE=1), and says so."""
    import urllib.error
    import urllib.request

    from workshop.names import LAPTOP, TINY, TINY_FAMILIES

    model = resolve_model(cfg.model)
    needs_hub = model not in (TINY, LAPTOP, *TINY_FAMILIES) and not os.path.isdir(model) or cfg.data == "hub"
    if not needs_hub or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=3).close()
    except urllib.error.HTTPError:  # it answered: reachable
        return
    except (OSError, ValueError) as err:
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
        print(f"[workshop] the Hugging Face Hub ({endpoint}) is unreachable from here ({err}): reading models "
              "and data from the cache alone", flush=True)


def run_training(cfg: RunConfig):
    """train(cfg) in its run folder; the manifest says how it ended (completed, failed, oom, cancelled, ...)."""
    import torch

    import workshop.train as training  # torch and transformers: only once the flags are known to be good
    from workshop.runlog import RunLog, default_run_dir
    from workshop.startup import STARTUP

    STARTUP.begin()
    share_the_cores(torch)
    config_name = cfg.run_name()
    try:  # refused when another training holds the folder: its manifest is left alone
        run = RunLog(cfg.run_dir or default_run_dir(config_name), {
            "config_name": config_name, "lesson": cfg.lesson, "settings": vars(cfg).copy(),
            "model": resolve_model(cfg.model), "init": cfg.init, "profile": cfg.profile, "data_source": cfg.data,
            "subset_size": cfg.subset_size, "deepspeed_config": cfg.deepspeed, "cpu_threads": torch.get_num_threads()})
    except WorkshopError as err:  # its folder held by another training, or its disk full
        fail(err, code=getattr(err, "code", 2))
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _train_and_record(training, cfg, run, torch)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a rank of a multi-process run (torchrun, deepspeed, srun)
        _leave_process_group(torch)
    if run.unrecorded:
        fail(f"the training completed, but {run.unrecorded}", code=6)
    print(f"[workshop] done; run folder {run.dir}", flush=True)


def _leave_process_group(torch):
    """Right after a completed training of one rank of several. Left to the interpreter's exit, the rank
    sometimes died at teardown: "terminate called without an active exception", SIGABRT, exit status -6 after
    "[workshop] done" (two-process FSDP2 runs beside busy loops on 2 cores: 2 of 22; leaving the group here: none
    of 32; at exit, through atexit: 1 of 14). The same abort hit a two-process ZeRO 3 run that the deepspeed
    launcher started (exit 250 in the walk-through), so every rank of a run with WORLD_SIZE > 1 leaves, whoever
    launched it. Not in a single process that trains again (the tests' in-process trainings keep their group),
    and not after a failure, which exits with its own status as before."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _train_and_record(training, cfg, run, torch):
    """train(cfg, run); the manifest records how it ended, and an expected stop is one line and its exit status."""
    from workshop.guards import RunStopped

    try:
        training.train(cfg, run)
    except RunStopped as stop:
        run.finish(stop.status, stop.code, str(stop), **stop.fields)
        fail(f"{stop}{'; ' + run.unrecorded if run.unrecorded else ''}", code=stop.code)
    except WorkshopError as err:
        run.finish("failed", 2, str(err))
        fail(err)
    except torch.OutOfMemoryError as err:
        fail(_out_of_memory(run, err), code=3)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
        run.finish("cancelled" if code == 128 + signal.SIGTERM else "failed", code)
        raise
    except BaseException as err:
        run.finish("failed", 1, f"{type(err).__name__}: {err}")
        raise
    run.finish("completed", 0)


def share_the_cores(torch):
    """Ranks that train on one machine's CPU split its cores. torch gives each process a thread per core, so two
    ranks on 2 cores ran 4 threads that waited on each other; torchrun sets OMP_NUM_THREADS=1 against it, DeepSpeed's
    launcher sets nothing. A thread count the user chose (OMP_NUM_THREADS) is kept."""
    from workshop.runlog import processes_per_node

    local = processes_per_node() or 1
    if local > 1 and "OMP_NUM_THREADS" not in os.environ and not torch.cuda.is_available():
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # macOS
        torch.set_num_threads(max(1, cores // local))


def _out_of_memory(run, err) -> str:
    """Record a CUDA out-of-memory error with the allocator's figures; returns the error line for the student."""
    from workshop.runlog import cuda_memory_now, describe_cuda_memory, fragmentation_hint

    memory = cuda_memory_now()  # the failed step's tensors are still alive: the figures at the time
    run.finish("oom", 3, str(err).splitlines()[0], oom_memory=memory)
    cap = run.manifest.get("gpu_memory_limit")
    capped = f", capped at {cap['gib']:g} GiB to emulate {cap['emulates']}" if cap else ""
    hint = fragmentation_hint(memory, cap["gib"] * 1024 if cap else None, os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""))
    return (f"out of GPU memory ({describe_cuda_memory(memory)}{capped}{hint}); lower --per-device-train-batch-size "
            f"{oom_advice(run.manifest.get('zero_stage'))}; figures in {run.dir}/manifest.json")


def oom_advice(stage: int | None) -> str:
    """What else frees GPU memory, for a run without DeepSpeed (stage None) or under ZeRO `stage`. BLOOM's
    250,880-way logits were the tensor that stopped bloom-1b7 at micro-batch 32 under ZeRO-2 offload (15.3 GiB
    in fp32: docs/results/issue28_h100-2026-12-06-b), so the chunked loss is named besides the stages."""
    if stage is None:
        return "or use DeepSpeed"
    logits = "or --chunked-loss (the logits are often the largest tensor)"
    if stage == 3:
        return f"or offload more (the *_offload configs), or --gradient-checkpointing, {logits}"
    return f"or a higher ZeRO stage or offload, or --gradient-checkpointing, {logits}"


def _exit_on_sigterm(signum, frame):
    # scancel and SLURM's time limit send SIGTERM: turn it into an exception so the manifest is finished.
    raise SystemExit(128 + signum)
