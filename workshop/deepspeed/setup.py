"""What a training sets up before the Trainer exists: the DeepSpeed config as the flags amend it, its ops loaded,
the GPU capped to the class's card, the CPU process group several DeepSpeed processes need without a GPU, and
where random weights are built. workshop.train calls these; each is a step of its own to read and to test."""
import atexit
import os
from datetime import timedelta
from pathlib import Path

import torch

from workshop.config import RunConfig
from workshop.deepspeed.config import load_ds_config, needed_ops, zero_stage
from workshop.errors import WorkshopError
from workshop.deepspeed.ops import build, is_prebuilt, setup_build_env
from workshop.deepspeed.preflight import emulated_card


def load_deepspeed_config(cfg: RunConfig):
    if cfg.deepspeed is None:
        return None
    setup_build_env()  # reuse ops built by `python -m workshop.prebuild_ops`; fix TORCH_CUDA_ARCH_LIST=9.0a
    ds_config = load_ds_config(cfg.deepspeed)
    use_nvme_path(cfg, ds_config)
    # The JSON files spell out the lesson's optimizer. A flag or profile that changes the same setting wins,
    # visibly: the Trainer would otherwise stop on the mismatch.
    params = ds_config.get("optimizer", {}).get("params", {})
    for key, value in (("lr", cfg.learning_rate), ("weight_decay", cfg.weight_decay)):
        if key in params and params[key] != "auto" and params[key] != value:
            print(f"[workshop] notice: optimizer.params.{key} {params[key]} in {cfg.deepspeed} "
                  f"replaced by {value} from the command line / --profile {cfg.profile}")
            params[key] = value
    match_zenflow_accumulation(cfg, ds_config)
    return ds_config


def match_zenflow_accumulation(cfg: RunConfig, ds_config: dict):
    """ZenFlow makes its update_interval DeepSpeed's gradient accumulation (deepspeed/runtime/zenflow/engine.py),
    which scales every micro-batch's loss: it must be the run's --gradient-accumulation-steps, so that wins."""
    zenflow = ds_config.get("zero_optimization", {}).get("zenflow")
    steps = cfg.gradient_accumulation_steps
    if not isinstance(zenflow, dict) or zenflow.get("update_interval", steps) == steps:
        return
    print(f"[workshop] notice: zero_optimization.zenflow.update_interval {zenflow['update_interval']} in "
          f"{cfg.deepspeed} replaced by --gradient-accumulation-steps {steps}")
    zenflow["update_interval"] = steps
    if isinstance(zenflow.get("select_interval"), int):  # ZenFlow refuses one below the update interval
        zenflow["select_interval"] = max(zenflow["select_interval"], steps)


def use_nvme_path(cfg: RunConfig, ds_config: dict):
    """--nvme-path replaces the config's nvme_path in each section that offloads to NVMe (ZeRO-Infinity), and the
    parameter swap buffers grow to the model's largest tensor (DeepSpeed stops at start-up if one does not fit;
    each buffer is pinned host memory, so the config keeps them small for small models)."""
    zero = ds_config.get("zero_optimization", {})
    sections = [zero[key] for key in ("offload_optimizer", "offload_param")
                if isinstance(zero.get(key), dict) and zero[key].get("device") == "nvme"]
    if cfg.nvme_path and not sections:
        print(f"[workshop] notice: --nvme-path ignored: {cfg.deepspeed} offloads nothing to NVMe")
    for section in sections:
        section["nvme_path"] = cfg.nvme_path or section.get("nvme_path")
    param = zero.get("offload_param") or {}
    largest = largest_tensor(cfg.model)
    if param.get("device") == "nvme" and largest and param.get("buffer_size", 1e8) < largest:
        print(f"[workshop] notice: offload_param.buffer_size {param.get('buffer_size', 1e8):,.0f} raised to "
              f"{largest:,} elements, the largest tensor of {cfg.model} (its embedding)")
        param["buffer_size"] = largest


def largest_tensor(model: str) -> int | None:
    from workshop.deepspeed.estimate import param_counts

    try:
        return param_counts(model)[1]
    except WorkshopError:  # no config to count from: loading the model will say why
        return None


def load_ops(ds_config: dict):
    """Load (or, the first time on this machine, build) the DeepSpeed ops this config uses, before the Trainer's
    clock starts: train_runtime then never holds a JIT build. In this process, so a job starts no extra Python."""
    for op in needed_ops(ds_config):
        if not is_prebuilt(op):  # said before the silence of a compile, not only after it
            print(f"[workshop] building DeepSpeed's {op} (a C++ compile, once on this machine; later jobs load it; "
                  "`python -m workshop.prebuild_ops` before class keeps it out of the jobs) ...", flush=True)
        seconds = build(op)
        if seconds > 30:  # a real compile, not a load: say how to keep it out of the next class's jobs
            print(f"[workshop] built DeepSpeed's {op} in {seconds:.0f} s; builds are kept and reused "
                  "(`python -m workshop.prebuild_ops` on a GPU node does it before class)", flush=True)
    atexit.register(remove_shm_buffers)


def remove_shm_buffers():
    """Remove this job's DeepSpeed shared-memory buffers from /dev/shm (at exit; a no-op where there are none).

    Without a GPU, DeepSpeed's communication backend gives each rank a 66 MiB buffer in /dev/shm and never
    removes it. /dev/shm is RAM: a day of runs on one node filled 20.8 of its 23.5 GiB and the kernel began
    killing compilers and trainings. By exit every rank has mapped the others' buffers, so unlinking them is
    safe; the master port in the name is this job's alone. slurm/common.sh catches a training that was killed.
    """
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if addr and port:
        for buffer in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_*"):
            buffer.unlink(missing_ok=True)


def cap_gpu_memory(cfg: RunConfig):
    """--gpu-memory-limit: PyTorch's allocator may take at most that much of this process's GPU, so a large card
    behaves like the class's smaller one. Returns (manifest record, GiB the run may use per GPU or None)."""
    if not torch.cuda.is_available():
        if cfg.gpu_memory_limit:
            print(f"[workshop] notice: --gpu-memory-limit {cfg.gpu_memory_limit:g} ignored: no CUDA GPU here")
        return None, None
    device = int(os.environ.get("LOCAL_RANK", "0"))
    total = torch.cuda.get_device_properties(device).total_memory / 2**30
    if not cfg.gpu_memory_limit:
        return None, total
    limit = min(cfg.gpu_memory_limit, total)
    torch.cuda.set_per_process_memory_fraction(limit / total, device)
    card = emulated_card(cfg.gpu_memory_limit)
    print(f"[workshop] GPU memory capped at {limit:g} of {total:.1f} GiB (emulates {card})", flush=True)
    return {"gib": float(cfg.gpu_memory_limit), "emulates": card}, limit


def cpu_deepspeed_state(ds_config: dict | None, timeout_s: int) -> dict:
    """Several DeepSpeed processes on a machine without a GPU (tests, CI, a laptop): make the Trainer count them.

    accelerate picks a communication backend only for devices it knows (nccl for CUDA, ...); on a plain CPU it
    leaves none and then reports one process, so the Trainer fills DeepSpeed's "auto" train_batch_size for a
    world of 1 and DeepSpeed, which sees them all, stops (`train_batch_size ... 16 != 4 * 4 * 2`). ddp_backend
    does not help: the Trainer ignores it under DeepSpeed. So here, and only here, the shared state is set up
    first with DeepSpeed's own CPU backend (ccl or gloo) and the Trainer is told to use it. On a GPU node this
    returns {} and nothing changes.
    """
    if ds_config is None or torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return {}
    from accelerate import PartialState
    from deepspeed.accelerator import get_accelerator

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # as the Trainer does: start deepspeed.comm, not plain torch
    try:
        PartialState(backend=get_accelerator().communication_backend_name(), timeout=timedelta(seconds=timeout_s))
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    return {"accelerator_config": {"use_configured_state": True}}


def build_device(ds_config: dict | None):
    """Where to build random weights: this process's GPU, unless ZeRO-3 is to partition them (its point is that
    no GPU ever holds the whole model)."""
    if not torch.cuda.is_available() or zero_stage(ds_config) == 3:
        return None
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
