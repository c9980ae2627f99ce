"""Will this run fit? Printed before anything is loaded, from DeepSpeed's estimators and the node's facts.

Per GPU: the model states of DeepSpeed's estimate for this ZeRO stage and offload choice (estimate.py),
plus the activations of one micro-batch (the formula of Korthikanti et al. 2022, "Reducing Activation
Recomputation in Large Transformer Models", without recomputation, and the logits: 250,880-way for BLOOM), from
the model's config (hidden size, layers, heads, vocabulary), so any family the workshop builds is estimated.
Per node: DeepSpeed's CPU-side estimate plus what one training process holds anyway (Python, torch, CUDA).

A host shortfall stops the run with one `error:` line (exit 2): the kernel would otherwise OOM-kill it minutes
later. A GPU shortfall is only a warning: lesson 2 wants students to see the out-of-memory error.

The host limit is the smallest of `--host-memory-gib` (or WORKSHOP_HOST_MEMORY_GIB), SLURM's `--mem`, the job's
memory cgroup and MemTotal; an explicit value replaces the others, because some machines start with a small
MemTotal that grows as memory is used.
"""
import math
import os
import shutil
from pathlib import Path

from workshop.errors import WorkshopError
from workshop.deepspeed.estimate import GIB, estimate_table

# Host RSS of one training process besides its model states: with CUDA its libraries and context (3.6 GiB measured
# on an H200); on a CPU the interpreter, torch and the tiny model (642 MiB peak, tiny baseline on a 2-core CPU box,
# 2026-12-01). One figure for both would refuse a laptop's tiny run under a 1 GiB --mem.
PROCESS_GIB = 3.5
PROCESS_GIB_CPU = 0.7
CUDA_CONTEXT_GIB = 0.5
# The class's cards, by the memory cap that makes a bigger GPU behave like them (GiB, as the flag takes it).
CARDS = {16: "V100 16GB", 24: "A10 24GB", 32: "V100 32GB", 40: "A100 40GB", 48: "L40S 48GB", 80: "H100 80GB",
         94: "H100 NVL 94GB", 141: "H200 141GB"}


def emulated_card(gib: float) -> str:
    return CARDS.get(round(gib), f"a {gib:g} GiB GPU") if abs(gib - round(gib)) < 1e-9 else f"a {gib:g} GiB GPU"


def activation_gib(model: str, micro_batch: int, seq: int, bytes_per_value: int = 2, checkpointing=False,
                   chunked_loss=False) -> float:
    """Activations of one micro-batch kept for the backward pass, plus the logits and their fp32 loss copies.
    With gradient checkpointing a layer keeps only its input (and one layer's activations are rebuilt at a time);
    with the chunked or fused loss only one chunk's logits exist (and the output weights' fp32 gradient), which
    is what decided bloom-1b7's largest micro-batch (docs/results/issue28_h100-2026-12-06-b)."""
    from workshop.fused_loss import CHUNK_TOKENS
    from workshop.model import model_config, resolve_model

    config = model_config(resolve_model(model))
    h, layers, heads = config.hidden_size, config.num_hidden_layers, config.num_attention_heads
    vocab = config.vocab_size
    per_layer = seq * micro_batch * h * (34 + 5 * heads * seq / h) * bytes_per_value / 2  # the paper counts fp16
    kept = layers * seq * micro_batch * h * bytes_per_value + per_layer if checkpointing else layers * per_layer
    tokens = min(micro_batch * seq, CHUNK_TOKENS) if chunked_loss else micro_batch * seq
    logits = tokens * vocab * (bytes_per_value + 8)  # logits, their fp32 upcast and its gradient
    if chunked_loss:
        logits += vocab * h * 4  # the output weights' gradient, summed over the chunks in fp32
    return (kept + logits) / GIB


def _offload_row(table, ds_config):
    """The estimate_table row for this config: stage, offload choice, ZeRO-3 created partitioned."""
    zero = (ds_config or {}).get("zero_optimization", {})
    stage = zero.get("stage", 0)
    devices = [(zero.get(key) or {}).get("device", "none") for key in ("offload_optimizer", "offload_param")]
    offload = {("none", "none"): "none", ("cpu", "none"): "optimizer", ("nvme", "none"): "optimizer",
               ("cpu", "cpu"): "optimizer+params", ("nvme", "nvme"): "optimizer+params",
               ("nvme", "cpu"): "optimizer+params", ("cpu", "nvme"): "optimizer+params"}[tuple(devices)]
    if zero.get("zenflow") is not None:  # ZeRO-2 offload plus ZenFlow's own buffers (estimate.py)
        offload += "+zenflow"
    if "nvme" in devices:  # the GPU side is that of CPU offload; the host keeps only buffers (below)
        offload_host = "none"
    else:
        offload_host = offload
    rows = table[(table.stage == stage) & (table.zero_init.isin(["", "yes"]))]
    gpu = rows[rows.offload == offload].iloc[0]
    host = rows[rows.offload == offload_host].iloc[0]
    return gpu, host, "nvme" in devices


def host_limit(override_gib=None):
    """(GiB, where it came from) of the memory this job may use on the node; (None, reason) if nothing says."""
    override = override_gib or os.environ.get("WORKSHOP_HOST_MEMORY_GIB")
    if override:
        return float(override), "--host-memory-gib" if override_gib else "WORKSHOP_HOST_MEMORY_GIB"
    found = []
    if os.environ.get("SLURM_MEM_PER_NODE"):
        found.append((int(os.environ["SLURM_MEM_PER_NODE"]) / 1024, "SLURM --mem"))
    cgroup = _cgroup_limit_bytes()
    if cgroup:
        found.append((cgroup / GIB, "memory cgroup"))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                found.append((int(line.split()[1]) / 2**20, "MemTotal"))
    except OSError:
        pass
    return min(found) if found else (None, "unknown")


def _cgroup_limit_bytes():
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        candidates = ([f"/sys/fs/cgroup{path}/memory.max"] if controllers == "" else
                      [f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"] if "memory" in controllers.split(",")
                      else [])
        for file in candidates:
            try:
                value = Path(file).read_text().strip()
            except OSError:
                continue
            if value.isdigit() and int(value) < 2**60:  # "max" or a huge number: no limit
                return int(value)
    return None


def nvme_buffers_gib(ds_config, params: float) -> float:
    """Pinned host buffers of NVMe offload: the parameter swap buffers (fp16; each must hold the largest tensor,
    BLOOM's embedding) and the optimizer's swap buffers (fp32, one ZeRO sub-group each, at most the model)."""
    zero = ds_config["zero_optimization"]
    param, optimizer = zero.get("offload_param") or {}, zero.get("offload_optimizer") or {}
    total = 0
    if param.get("device") == "nvme":
        total += param.get("buffer_count", 5) * param.get("buffer_size", 1e8) * 2
    if optimizer.get("device") == "nvme":
        total += optimizer.get("buffer_count", 4) * min(zero.get("sub_group_size", 1e9), params) * 4
    return total / GIB


def check_async_io() -> str | None:
    """None when DeepSpeed's async_io op (NVMe offload) can be built or loaded here, else what is missing."""
    from workshop.deepspeed.config import quiet_deepspeed
    with quiet_deepspeed():
        from deepspeed.ops.op_builder.all_ops import ALL_OPS
    builder = ALL_OPS.get("async_io")
    if builder is None:
        return "this DeepSpeed accelerator has no async_io op"
    if not builder.is_compatible(verbose=False):
        return ("DeepSpeed's async_io op cannot be built: libaio is missing (`apt-get install libaio-dev`, "
                "or point CFLAGS=-I<prefix>/include LDFLAGS=-L<prefix>/lib at a libaio install)")
    return None


def preflight(cfg, ds_config, gpu_total_gib=None, gpus=None, precision="fp16"):
    """Print the expected needs. Returns (the manifest record, None or why the run cannot fit this node).

    gpu_total_gib: what one GPU offers (the card, or --gpu-memory-limit); None without a GPU (a CPU run, which
    also needs less host memory per process). precision: the run's, as workshop.deepspeed.plan decided it (the
    default is the lesson's on a GPU); it sizes the activations.
    """
    from workshop.model import resolve_model

    model = resolve_model(cfg.model).removeprefix("bigscience/")
    if not gpus:  # this node's processes: the host memory asked for is per node, not for the whole job
        from workshop.runlog import node_count
        gpus = max(1, int(os.environ.get("WORLD_SIZE", "1")) // node_count())
    stage = ((ds_config or {}).get("zero_optimization") or {}).get("stage", 0)
    try:
        table = estimate_table(model, gpus, deepspeed=stage >= 2)  # ZeRO 0-1 rows are the formula's
    except ImportError as err:  # the estimators are DeepSpeed's: a lesson-1 environment may lack it
        print(f"[workshop] preflight skipped: {err}", flush=True)
        return None, None
    except WorkshopError as err:  # no config to count from (a Hub id not cached): loading will say so itself
        print(f"[workshop] preflight: no estimate for {cfg.model} ({str(err).split(':')[0]}); skipped", flush=True)
        return None, None
    gpu_row, host_row, nvme = _offload_row(table, ds_config)
    if cfg.peft != "none":  # DeepSpeed's estimators count every weight as trained
        gpu_row, host_row = _peft_rows(cfg, model, gpu_row, host_row, precision, gpus, stage if ds_config else None)
    bytes_per_value = 4 if precision == "fp32" else 2
    activations = activation_gib(model, cfg.per_device_train_batch_size, cfg.max_length, bytes_per_value,
                                 cfg.gradient_checkpointing, cfg.chunked_loss or cfg.fused_loss)
    gpu_gib = gpu_row.gpu_gib_per_gpu + activations + CUDA_CONTEXT_GIB
    params = table.iloc[0].params_m * 1e6
    process = (PROCESS_GIB if gpu_total_gib is not None else PROCESS_GIB_CPU) * gpus
    host_gib = host_row.cpu_gib_per_node + process + (nvme_buffers_gib(ds_config, params) if nvme else 0)
    limit, limit_source = host_limit(cfg.host_memory_gib)
    where = ds_config and f"ZeRO {gpu_row.stage}" + (f" + {gpu_row.offload} offload" if gpu_row.offload != "none"
                                                      else "") + (" to NVMe" if nvme else "")
    limit_text = f"host limit {'unknown' if limit is None else f'{limit:.1f} GiB'} ({limit_source})"
    if gpu_total_gib is None:  # no GPU: what a GPU would hold lives in host memory too
        host_gib = cpu_host_gib(gpu_row, host_row, activations, gpus) + process
        print(f"[workshop] preflight: {model} under {where or 'no DeepSpeed'}, {gpus} process(es) on the CPU (no "
              f"GPU): about {host_gib:.1f} GiB host memory per node (per process: model states "
              f"{gpu_row.gpu_gib_per_gpu:.2f} GiB by {gpu_row.source}'s estimate + activations {activations:.2f}"
              f"{' + offloaded states' if gpu_row.offload != 'none' else ''}; {process:.1f} for the process(es)); "
              f"{limit_text}", flush=True)
    else:
        print(f"[workshop] preflight: {model} under {where or 'no DeepSpeed'}, {gpus} GPU(s): about {gpu_gib:.1f} "
              f"GiB per GPU (model states {gpu_row.gpu_gib_per_gpu:.1f} by {gpu_row.source}'s estimate + "
              f"activations {activations:.1f} + CUDA context {CUDA_CONTEXT_GIB}), about {host_gib:.1f} GiB host "
              f"memory per node ({host_row.cpu_gib_per_node:.1f} + {process:.1f} for the process(es)); {limit_text}",
              flush=True)
    record = {"gpu_gib": round(gpu_gib, 2), "host_gib": round(host_gib, 2),
              "host_limit_gib": None if limit is None else round(limit, 2),
              "source": f"{gpu_row.source} estimator + activations; host limit from {limit_source}"}
    if gpu_total_gib is not None and gpu_gib > gpu_total_gib:
        print(f"[workshop] warning: expected {gpu_gib:.1f} GiB per GPU is more than the {gpu_total_gib:.1f} GiB "
              "available: expect an out-of-memory error (a lower stage or more offload would fit)", flush=True)
    refusal = _check_nvme(ds_config, params) if nvme else None
    if refusal is None and limit is not None and host_gib > limit:
        refusal = _host_refusal(f"{model} under {where or 'no DeepSpeed'}", host_gib, limit, limit_source, ds_config)
    return record, refusal


def _peft_rows(cfg, model, gpu_row, host_row, precision, gpus, stage):
    """The rows' model states for a LoRA or QLoRA run (workshop/peft_estimate.py): the frozen base in its dtype and
    the adapters' states, on the GPU or offloaded; the host also reads the fp32 model once per process first (ZeRO 3
    builds it partitioned: once per node), with DeepSpeed's 1.5 buffer factor."""
    from workshop.adapters import targets
    from workshop.peft_estimate import peft_states

    found = peft_states(model, cfg.peft, cfg.lora_r, targets(cfg), precision, stage, gpu_row.offload, gpus)
    load = 4 * found["params"] * (1 if stage == 3 else gpus) * 1.5
    gpu_row, host_row = gpu_row.copy(), host_row.copy()
    gpu_row["gpu_gib_per_gpu"], gpu_row["source"] = found["gpu"] / GIB, f"workshop.peft_estimate ({cfg.peft})"
    host_row["cpu_gib_per_node"] = max(found["host"], load) / GIB
    return gpu_row, host_row


def _host_refusal(what, host_gib, limit, limit_source, ds_config):
    # Whole GiB would print "needs about 24 GiB but may use 24 GiB" for 23.8 against 23.5.
    smaller = ("or use less offload, or stage3_offload_nvme" if ds_config
               else "or a smaller --per-device-train-batch-size or --max-length")
    return (f"{what} needs about {host_gib:.1f} GiB of host memory per node but this job may use {limit:.1f} GiB "
            f"({limit_source}): ask for `#SBATCH --mem={math.ceil(host_gib)}G` ({smaller}), or pass "
            "--host-memory-gib N if that limit is read wrongly")


def cpu_host_gib(gpu_row, host_row, activations, processes) -> float:
    """Host memory of a run without a GPU, besides the processes themselves: each process's model states and
    activations (a GPU's share), plus what offload keeps on the host, or DeepSpeed's load-time estimate where that
    is larger."""
    held = processes * (gpu_row.gpu_gib_per_gpu + activations)
    offloaded = host_row.cpu_gib_per_node if gpu_row.offload != "none" else 0
    return max(host_row.cpu_gib_per_node, held + offloaded)


def _check_nvme(ds_config, params):
    """None, or why NVMe offload cannot run here (the op, or the disk space)."""
    missing = check_async_io()
    if missing:
        return f"NVMe offload needs {missing}"
    zero = ds_config["zero_optimization"]
    paths = {zero[key]["nvme_path"] for key in ("offload_optimizer", "offload_param")
             if (zero.get(key) or {}).get("device") == "nvme"}
    # On disk: fp16 parameters (2 bytes each) and the optimizer's fp32 master weights, Adam moments, gradients.
    need_gib = params * (2 + 16) / GIB
    for path in paths:
        Path(path).mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path).free / GIB
        print(f"[workshop] preflight: NVMe offload to {path}: about {need_gib:.0f} GiB of swap files, "
              f"{free:.0f} GiB free there", flush=True)
        if need_gib > free:
            return (f"NVMe offload needs about {need_gib:.0f} GiB free in {path}, which has {free:.0f} GiB: "
                    "choose another --nvme-path")
    return None
