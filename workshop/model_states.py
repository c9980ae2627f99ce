"""The bytes of model states one process holds, read from the training's own objects: exact and free of noise,
unlike a measured peak, so ZeRO's sharding shows on any machine (two processes under ZeRO 3 each hold about half
of what one holds under ZeRO 0).

manifest.json gets, after the first optimizer step (when Adam's moments exist):

    "model_states": {"world_size": 2, "zero_stage": 3,
                     "bytes_per_process": {"parameters": ..., "gradients": ..., "optimizer": ...},
                     "device": {"parameters": "cpu", "gradients": "cpu", "optimizer": "cpu"}}

parameters: the weights this process keeps between steps: the whole model (no DeepSpeed, stages 0-2) or its own
    partition of every parameter (stage 3: each parameter's ds_tensor).
gradients: the gradients this process keeps through a backward pass, in the parameters' dtype: every parameter's
    (no DeepSpeed, stages 0 and 1: ZeRO 1 keeps whole gradients until the step reduces them) or its partition
    (stages 2 and 3: DeepSpeed reduces them bucket by bucket as they are made). They live only inside a step, so
    they are counted from the layout the engine chose, not from tensors alive when this is read.
optimizer: the optimizer's own copies of the weights (DeepSpeed's fp32 master partitions: ZeRO 1-3 keep them even
    for fp32 weights, sharing them only under torch autocast) and its per-parameter states (Adam's two moments;
    scalar step counters left out).
A tensor that shares memory with one counted before is counted once. On NVMe the bytes are those of the swap files.
"""
import torch
from transformers import TrainerCallback

KINDS = ("parameters", "gradients", "optimizer")
MASTERS = ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat", "fp32_groups_flat_partition",
           "fp32_groups_flat")  # ZeRO 1-2, ZeRO 3, DeepSpeed's bf16 and fp16 optimizers


class _Memory:
    """Bytes of tensors, each byte of memory counted once however many tensors view it."""

    def __init__(self):
        self.spans = []

    def new_bytes(self, tensor) -> int:
        tensor = _local(tensor)
        if tensor is None or tensor.numel() == 0 or tensor.device.type == "meta":
            return 0
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        fresh = end - start - sum(max(0, min(end, e) - max(start, s)) for s, e in self.spans)
        self.spans.append((start, end))
        return fresh


def _deepspeed_engine(trainer):
    engine = getattr(trainer, "model_wrapped", None)
    return engine if getattr(trainer, "is_deepspeed_enabled", False) and hasattr(engine, "optimizer") else None


def _states(optimizer, memory: _Memory) -> int:
    return sum(memory.new_bytes(value) for state in optimizer.state.values() for value in state.values()
               if torch.is_tensor(value) and value.dim() > 0)


def _local(tensor):
    """This process's part of a tensor: its shard of an FSDP2 DTensor, else the tensor itself."""
    return getattr(tensor, "_local_tensor", tensor)


def _whole_gradients(model) -> int:
    """A gradient per trainable parameter, as large as this process's part of it (FSDP2 reduce-scatters them)."""
    return sum(_local(p).numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def plain_model_states(model, optimizer) -> dict:
    """The plain Trainer's (or any torch model and optimizer's) model states on this process."""
    memory = _Memory()
    device = next(model.parameters()).device.type
    return {"world_size": _world_size(), "zero_stage": None,
            "bytes_per_process": {"parameters": sum(memory.new_bytes(p) for p in model.parameters()),
                                  "gradients": _whole_gradients(model),
                                  "optimizer": _states(getattr(optimizer, "optimizer", optimizer), memory)},
            "device": dict.fromkeys(KINDS, device)}


def engine_model_states(engine) -> dict:
    """A DeepSpeed engine's model states on this process (see the module's docstring)."""
    stage, zero = engine.zero_optimization_stage(), engine.optimizer
    inner = getattr(zero, "optimizer", zero)  # the ZeRO (or bf16/fp16) wrapper's torch optimizer
    module, memory = engine.module, _Memory()
    element = next(module.parameters()).element_size()
    if stage == 3:
        params = sum(memory.new_bytes(p.ds_tensor) for p in module.parameters())
        on_nvme = getattr(zero, "params_in_nvme_and_cpu", False)
        if on_nvme:
            params = sum(p.partition_numel() * element for p in module.parameters())
        param_device = "nvme" if on_nvme else next(module.parameters()).ds_tensor.device.type
    else:
        params = sum(memory.new_bytes(p) for p in module.parameters())
        param_device = next(module.parameters()).device.type
    masters = next((getattr(zero, name) for name in MASTERS if getattr(zero, name, None)), [])
    if stage >= 2:
        grads = sum(master.numel() for master in masters) * element
    else:
        grads = _whole_gradients(module)
    swapped = getattr(zero, "swap_optimizer", False)
    if swapped:  # states and master weights live in swap files: Adam's two moments and the fp32 master
        optimizer = sum(master.numel() for master in masters) * 4 * 3
    else:
        optimizer = sum(memory.new_bytes(master) for master in masters) + _states(inner, memory)
    offloaded = getattr(zero, "cpu_offload", False) or getattr(zero, "offload_optimizer", False)
    optimizer_device = "nvme" if swapped else "cpu" if offloaded else param_device
    return {"world_size": _world_size(), "zero_stage": stage,
            "bytes_per_process": {"parameters": params, "gradients": grads, "optimizer": optimizer},
            "device": {"parameters": param_device, "gradients": "cpu" if offloaded else param_device,
                       "optimizer": optimizer_device}}


def model_states(trainer) -> dict:
    engine = _deepspeed_engine(trainer)
    if engine is not None:
        return engine_model_states(engine)
    return plain_model_states(trainer.model, trainer.optimizer)


class ModelStatesCallback(TrainerCallback):
    """Records model_states in the manifest once the optimizer's states exist: after the first optimizer step that
    made them (an fp16 step skipped for overflow makes none), else at the end of training."""

    def __init__(self, run, trainer):
        self.run, self.trainer, self.done = run, trainer, False

    def on_step_end(self, args, state, control, **kwargs):
        if not self.done:
            states = model_states(self.trainer)
            if states["bytes_per_process"]["optimizer"]:
                self.run.update(model_states=states)
                self.done = True

    def on_train_end(self, args, state, control, **kwargs):
        if not self.done:
            self.run.update(model_states=model_states(self.trainer))
            self.done = True


def _world_size() -> int:
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_world_size() if distributed else 1
