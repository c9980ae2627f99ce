"""--fsdp full_shard|shard_grad_op|full_shard_offload: PyTorch's FSDP2 (`fully_shard`) through the same Trainer.

Why not the Trainer's own `fsdp=` argument: measured with transformers 5.25, torch 2.13 and accelerate 1.16 (2
processes, gloo), accelerate chooses its FSDP path only for GPU-like devices; with `use_cpu` the model is silently
wrapped in DistributedDataParallel (every process holds the whole model, no warning), and without it the Trainer
stops ("Using fsdp only works in distributed training"). So the workshop applies FSDP2 itself, the family's decoder
layer (its `_no_split_modules`) as the unit and then the whole model, before the Trainer exists, and tells the
Trainer's accelerator to leave that model as it is (no DDP over it). On a GPU the same code shards over NCCL.

What actually happened is recorded, not assumed: `wrapping` in the manifest says what wrapped the model the Trainer
trained and how its parameters are placed (DTensor shards: how many, this process's share), for every run; a run
that asked for FSDP and trained anything else stops with one `error:` line.

ZeRO <-> FSDP2: FULL_SHARD ~ ZeRO-3 (parameters, gradients and optimizer states sharded; parameters gathered for
each unit's forward and backward), SHARD_GRAD_OP ~ ZeRO-2 (gradients and optimizer states sharded; parameters stay
whole between forward and backward: `reshard_after_forward=False`), FULL_SHARD + CPU offload ~ ZeRO-3 with
offload_param and offload_optimizer on the CPU (CPUOffloadPolicy: the optimizer steps on the CPU).
"""
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from workshop.errors import WorkshopError
from workshop.fsdp_modes import MODES


def process_group(cfg, cuda: bool) -> dict:
    """Before TrainingArguments: the process group FSDP2 shards over, and the Trainer told to use it. Several CPU
    processes: accelerate's MULTI_CPU state over gloo (the Trainer then averages the logged loss over the ranks).
    One process: a group of one (fully_shard needs a mesh). On a GPU the Trainer sets up NCCL itself."""
    if not cfg.fsdp or cuda:
        return {}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState(cpu=True, backend="gloo", timeout=timedelta(seconds=cfg.dist_timeout))
        return {"accelerator_config": {"use_configured_state": True}}
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    return {}


def shard(model, mode: str, bf16: bool, fp16: bool, wrap_class: str | None = None):
    """FSDP2 over every module of `wrap_class` (default: the family's decoder layer), then the model itself."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    if fp16:
        raise WorkshopError("--fsdp trains in fp32 or bf16 (--precision bf16): fp16 would need FSDP's sharded "
                            "gradient scaler, which the Trainer does not use")
    units = {wrap_class} if wrap_class else layer_classes(model)
    settings = dict(MODES[mode])
    offload = settings.pop("offload", False)
    mesh = init_device_mesh("cuda" if torch.cuda.is_available() else "cpu", (dist.get_world_size(),))
    extra = {"mesh": mesh, **settings}
    if offload:
        extra["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())  # no pinning without a GPU
    if bf16:  # computed in bf16, gradients reduced in fp32 (as ZeRO's bf16 keeps fp32 master weights)
        extra["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if torch.cuda.is_available() and not offload:
        model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    for module in model.modules():
        if type(module).__name__ in units:
            fully_shard(module, **extra)
    fully_shard(model, **extra)
    return model


def layer_classes(model) -> set:
    """The family's decoder layer: transformers names it in `_no_split_modules` (BloomBlock, LlamaDecoderLayer)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    found = {type(module).__name__ for module in model.modules()} & names
    if not found:
        raise WorkshopError(f"--fsdp: {type(model).__name__} names no decoder layer to shard by "
                            f"(_no_split_modules: {sorted(names) or 'none'})")
    return found


def check_wrap_class(cfg):
    """--fsdp-wrap-class must name a module class the model has: checked on its skeleton (the meta device: no
    weights, no memory), before any run folder or training, in one line that lists the classes there are."""
    from transformers import AutoModelForCausalLM

    from workshop.model import model_config
    from workshop.names import resolve_model

    if not cfg.fsdp:
        raise WorkshopError(f"--fsdp-wrap-class {cfg.fsdp_wrap_class} needs --fsdp (it says how FSDP2 shards)")
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(model_config(resolve_model(cfg.model)))
    classes = sorted({type(module).__name__ for module in skeleton.modules()} - {type(skeleton).__name__})
    default = ", ".join(sorted(set(getattr(skeleton, "_no_split_modules", None) or ()) & set(classes))) or "none"
    if cfg.fsdp_wrap_class not in classes:
        raise WorkshopError(f"--fsdp-wrap-class: {cfg.model} has no module class {cfg.fsdp_wrap_class!r}; its "
                            f"classes: {', '.join(classes)} (default: the decoder layer, {default})")


def wrapping(trainer) -> dict:
    """What wrapped the model the Trainer trains, and how its parameters are placed: the manifest's `wrapping`."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    wrapped, model = trainer.model_wrapped, trainer.model
    params = list(model.parameters())
    sharded = [p for p in params if isinstance(p, DTensor)]
    whole = sum(p.numel() for p in params)
    local = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params)
    return {"wrapper": type(wrapped).__name__, "model": type(model).__name__,
            "fsdp_units": sum(isinstance(m, FSDPModule) for m in model.modules()),
            "unit_classes": sorted({type(m).__name__.removeprefix("FSDP") for m in model.modules()
                                    if isinstance(m, FSDPModule) and m is not model}),
            "dtensor_parameters": len(sharded), "parameters": len(params),
            "placements": sorted({str(p.placements) for p in sharded}),
            "local_share": round(local / whole, 4) if whole else None,
            "world_size": dist.get_world_size() if dist.is_initialized() else 1}


def check_wrapping(record: dict, mode: str | None):
    """A run that asked for FSDP and trained anything else stops here."""
    if not mode:
        return
    if record["wrapper"] == "DistributedDataParallel" or not record["dtensor_parameters"] or not record["fsdp_units"]:
        raise WorkshopError(f"--fsdp {mode} asked for FSDP2, but the Trainer trained {record['wrapper']} with "
                            f"{record['dtensor_parameters']} of {record['parameters']} parameters sharded "
                            "(the manifest's `wrapping` has the details): stopped rather than train unsharded")


def leave_fsdp_models_alone(trainer):
    """The Trainer's accelerator would wrap a model in DDP on several processes: not one FSDP2 already shards."""
    from torch.distributed.fsdp import FSDPModule

    accelerator = trainer.accelerator
    prepare_model = accelerator.prepare_model

    def prepare(model, device_placement=None, evaluation_mode=False):
        if isinstance(model, FSDPModule):
            accelerator._models.append(model)
            return model
        return prepare_model(model, device_placement=device_placement, evaluation_mode=evaluation_mode)

    accelerator.prepare_model = prepare


def full_state_dict(model) -> dict:
    """The whole model's weights on the CPU (every process takes part in the gathers; rank 0 gets them)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_sharded(model, optimizer, folder):
    """The checkpoint's FSDP2 state as PyTorch's distributed checkpoint (DCP): each process writes its own shards
    of the weights and optimizer states, as FSDP holds them, into <checkpoint>/fsdp_dcp (workshop.export reads it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    dcp.save({"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)},
             checkpoint_id=str(folder / DCP_FOLDER))


def load_sharded(model, optimizer, folder):
    """Resume: this process's shards of the weights and optimizer states from the checkpoint's DCP state (DCP
    re-shards what another number of processes saved). The optimizer's states are created first, empty, as the
    shapes to read into."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    weights, states = get_state_dict(model, optimizer)
    state = {"model": weights, "optimizer": states}
    dcp.load(state, checkpoint_id=str(folder / DCP_FOLDER))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


DCP_FOLDER = "fsdp_dcp"


def read_dcp_weights(checkpoint) -> dict:
    """A DCP checkpoint's model weights, whole, in this one process (no process group needed)."""
    import tempfile
    from pathlib import Path

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as scratch:
        dcp_to_torch_save(str(Path(checkpoint) / DCP_FOLDER), f"{scratch}/state.pt")
        state = torch.load(f"{scratch}/state.pt", weights_only=True)  # written a moment ago from tensors only
    return state["model"]


def fsdp_trainer(base):
    """`base` (the Trainer or a subclass) training a model FSDP2 already shards: no DDP over it, the whole model
    gathered for save_pretrained, and each checkpoint's sharded state in DCP beside it."""
    from pathlib import Path

    from torch.distributed.fsdp import FSDPModule
    from transformers.trainer import SCHEDULER_NAME
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class FsdpTrainer(base):
        shards_itself = True  # workshop.guards.save_final saves through save_model, which gathers the shards

        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()
            leave_fsdp_models_alone(self)

        def _move_model_to_device(self, model, device):
            # shard() placed it: on the GPU, or on the CPU under CPU offload, where FSDP2 must find it at the first
            # forward (the Trainer's move put the model's own parameters on the GPU: a RuntimeError, on an H100)
            if not isinstance(model, FSDPModule):
                super()._move_model_to_device(model, device)

        def save_model(self, output_dir=None, _internal_call=False):
            if not isinstance(self.model, FSDPModule):
                return super().save_model(output_dir, _internal_call)
            state = full_state_dict(self.model)  # a collective: every process, rank 0 keeps the result
            if self.args.should_save:
                self._save(output_dir or self.args.output_dir, state_dict=state)

        # The Trainer's own resume would read whole weights into DTensors and one process's optimizer file into
        # every process: the sharded state (fsdp_dcp/) is read instead, weights and optimizer states together
        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            if not isinstance(self.model, FSDPModule):
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            if not (Path(resume_from_checkpoint) / DCP_FOLDER / ".metadata").is_file():
                raise WorkshopError(f"--fsdp cannot resume from {resume_from_checkpoint}: it has no sharded FSDP2 "
                                    f"state ({DCP_FOLDER}/), so it was not saved by an --fsdp run; start from step "
                                    "0 with --resume never")

        def _load_optimizer_and_scheduler(self, checkpoint):
            if checkpoint is None or not isinstance(self.model, FSDPModule):
                return super()._load_optimizer_and_scheduler(checkpoint)
            load_sharded(self.model, self.optimizer, Path(checkpoint))
            self.lr_scheduler.load_state_dict(torch.load(Path(checkpoint) / SCHEDULER_NAME, weights_only=True))

        def _save_optimizer_and_scheduler(self, output_dir):
            if not isinstance(self.model, FSDPModule):
                return super()._save_optimizer_and_scheduler(output_dir)
            # the optimizer's states are saved sharded, with the weights, in fsdp_dcp/ (_save_checkpoint): the
            # Trainer's optimizer.pt would be rank 0's shards alone, bytes on disk that nothing resumes from
            if self.args.should_save:
                torch.save(self.lr_scheduler.state_dict(), Path(output_dir) / SCHEDULER_NAME)

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            if isinstance(self.model, FSDPModule):
                folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
                save_sharded(self.model, self.optimizer, folder)

    return FsdpTrainer


class WrappingCallback(TrainerCallback):
    """Records `wrapping` (what the Trainer really trains) as the first step begins, for every run, and stops a
    run that asked for FSDP and got anything else before it trains a step."""

    def __init__(self, run, trainer, mode):
        self.run, self.trainer, self.mode, self.done = run, trainer, mode, False

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.done:
            self.done = True
            record = wrapping(self.trainer)
            self.run.update(wrapping=record)
            check_wrapping(record, self.mode)
