"""prepare(cfg) -> Plan: every decision a run makes before anything big is loaded, in the order it makes them.

A typo in the DeepSpeed JSON, fp16 asked for without a GPU, a precision the JSON contradicts or a node too small
for the run all fail here, in seconds, before minutes of model loading. The Plan then holds what the rest of the
run reads: the DeepSpeed config as the flags amended it, the one precision the Trainer and DeepSpeed both use,
the GPU cap, the preflight record and the ops loaded.
"""
from dataclasses import dataclass, field

import torch

from workshop.config import RunConfig, precision_name, resolve_precision
from workshop.deepspeed.config import check_gpu_precision, match_precision, needed_ops, zero_stage
from workshop.deepspeed.preflight import preflight
from workshop.deepspeed.setup import build_device, cap_gpu_memory, load_deepspeed_config, load_ops
from workshop.errors import WorkshopError
from workshop.model import check_reachable
from workshop.startup import STARTUP


@dataclass
class Plan:
    ds_config: dict | None  # None: the plain Trainer
    fp16: bool
    bf16: bool
    cuda: bool
    gpu_memory_limit: dict | None = None  # the manifest's record of --gpu-memory-limit
    gpu_gib: float | None = None  # what one GPU offers this run (the card, or the cap); None without a GPU
    preflight: dict | None = None  # the expected memory, as the manifest records it
    refusal: str | None = None  # why this node cannot fit the run
    ops: list = field(default_factory=list)  # DeepSpeed's ops, loaded before the Trainer's clock starts

    @property
    def precision(self) -> str:
        return precision_name(self.fp16, self.bf16)

    @property
    def zero_stage(self) -> int | None:
        return zero_stage(self.ds_config) if self.ds_config is not None else None

    @property
    def weights_device(self) -> str | None:
        """Where random weights are built (None: where the model's loader puts them)."""
        return build_device(self.ds_config)

    def record(self) -> dict:
        """The manifest's fields for this plan."""
        return {"gpu_memory_limit": self.gpu_memory_limit, "preflight": self.preflight,
                "precision": self.precision, "zero_stage": self.zero_stage}


def prepare(cfg: RunConfig, load=load_ops) -> Plan:
    """Decide the run's DeepSpeed config, precision and GPU memory, check it fits, and load its ops (unless the
    preflight refused it: the caller records the plan, then stops on plan.refusal). `load(ds_config)` loads them
    (workshop.windows marks that window as left out of the run's figures)."""
    cuda = torch.cuda.is_available()
    ds_config = load_deepspeed_config(cfg)  # first: a typo in the JSON fails before minutes of loading
    check_gpu_precision(cfg, ds_config, cuda)  # and so does fp16 on a machine without a GPU
    if cfg.peft == "qlora":
        from workshop.peft_model import check_qlora_device

        check_qlora_device(cuda)  # and QLoRA without its 4-bit layers
    # The one place precision is decided: the Trainer, DeepSpeed, the preflight and the manifest all read it here.
    fp16, bf16 = resolve_precision(cfg, cuda, torch.cuda.is_bf16_supported() if cuda else True)
    if ds_config is not None:
        match_precision(cfg.deepspeed, ds_config, fp16, bf16)
    check_reachable(cfg.model, cfg.init)  # a missing download is the first thing to fix
    limit, gpu_gib = cap_gpu_memory(cfg)
    estimate, refusal = preflight(cfg, ds_config, gpu_gib, precision=precision_name(fp16, bf16))
    plan = Plan(ds_config, fp16, bf16, cuda, limit, gpu_gib, estimate, refusal)
    if ds_config is not None and refusal is None:
        load(ds_config)
        plan.ops = needed_ops(ds_config)
        STARTUP.mark("ops_loaded")
    return plan


def stop_if_refused(plan: Plan):
    if plan.refusal:
        raise WorkshopError(plan.refusal)
