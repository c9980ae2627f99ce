"""Model-state memory of a LoRA or QLoRA run, in closed form (DeepSpeed's estimators assume every weight trains).

    python -m workshop.estimate --model 7b1 --peft lora      # full vs LoRA vs QLoRA, and the largest BLOOM per card

The frozen base is held in its dtype and nothing else: 4 bytes a weight under the plain Trainer (its mixed
precision keeps the module in fp32) or in fp32, 2 under DeepSpeed's fp16/bf16 engine, and for QLoRA the linear
layers in 4-bit NF4 with double-quantized block constants (NF4_BYTES) and the rest (embeddings, norms) in bf16.
Only the adapters train: r x (inputs + outputs) per adapted linear layer, each with an fp32 master weight, an fp32
gradient and Adam's two fp32 moments (ADAPTER_BYTES). ZeRO 3 splits the base over the processes (offload_param
moves it to the host); ZeRO 1-3 split the adapters' states (offload_optimizer moves them to the host). Activations
come on top (workshop/deepspeed/preflight.py adds them).
"""
import functools

import torch

ADAPTER_BYTES = 16  # fp32 weight 4 + fp32 gradient 4 + Adam's fp32 moments 8
# 4 bits a weight + one 8-bit absmax per 64-weight block + one fp32 constant per 256 of those (double quantization)
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)


@functools.lru_cache(maxsize=None)
def linear_layers(model: str) -> tuple:
    """((module name, inputs, outputs), ...) of every nn.Linear but the output head, and the model's parameter
    count: the model built on the meta device from its config (no memory, no download)."""
    from workshop.model import MODEL_FOR_CAUSAL_LM_MAPPING, model_config, resolve_model

    config = model_config(resolve_model(model))
    with torch.device("meta"):
        net = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)](config)
    head = net.get_output_embeddings()
    layers = tuple((name, m.in_features, m.out_features) for name, m in net.named_modules()
                   if isinstance(m, torch.nn.Linear) and m is not head)
    return layers, sum(p.numel() for p in net.parameters())


def adapter_params(model: str, r: int, targets) -> int:
    """LoRA's trainable parameters: r x (inputs + outputs) for each linear layer whose name ends in a target (peft's
    matching), every one for "all-linear"."""
    layers, _ = linear_layers(model)
    chosen = [(i, o) for name, i, o in layers
              if targets == "all-linear" or name.rsplit(".", 1)[-1] in targets]
    return sum(r * (i + o) for i, o in chosen)


def base_bytes(model: str, method: str, precision: str, deepspeed: bool) -> float:
    """The frozen base's bytes: 4-bit linear layers for QLoRA, else every weight in the dtype the run holds it in."""
    layers, total = linear_layers(model)
    if method == "qlora":
        linear = sum(i * o for _, i, o in layers)
        return linear * NF4_BYTES + (total - linear) * 2
    return total * (2 if deepspeed and precision != "fp32" else 4)


def peft_states(model, method, r, targets, precision="fp16", stage=None, offload="none", gpus=1) -> dict:
    """Bytes per GPU and per node of a PEFT run's model states. stage None: the plain Trainer; offload as
    estimate.py names it (none, optimizer, optimizer+params)."""
    adapters = adapter_params(model, r, targets)
    base = base_bytes(model, method, precision, stage is not None)
    states = adapters * ADAPTER_BYTES / (gpus if stage and stage >= 1 else 1)
    base_here = base / gpus if stage == 3 else base
    on_host_base = base_here * gpus if "params" in offload else 0
    on_host_states = states * gpus if offload.startswith("optimizer") else 0
    _, total = linear_layers(model)
    return {"gpu": (0 if on_host_base else base_here) + (0 if on_host_states else states),
            "host": on_host_base + on_host_states, "base": base, "adapter_params": adapters, "params": total}


def full_states(model, precision="fp16", deepspeed=True) -> float:
    """Full fine-tuning's model states on one GPU, no ZeRO: 2 bytes fp16 weights + 18 (estimate.py's accounting)
    under DeepSpeed, 16 under the plain Trainer's fp32 weights, gradients and Adam moments."""
    _, total = linear_layers(model)
    return total * (20 if deepspeed and precision != "fp32" else 16)


CARDS_GIB = (40, 80)  # the class's A100 40GB and an H100 80GB
LESSON_BATCH = (4, 512)  # the lesson's micro-batch and sequence length: activations at that size


def one_gpu_gib(model, method, r=16, targets=None, card_batch=LESSON_BATCH) -> float:
    """GiB one GPU needs to train `model` by `method` (full, lora, qlora) under DeepSpeed ZeRO 0 in bf16, without
    offload: model states, the lesson's micro-batch's activations and logits, and the CUDA context."""
    from workshop.adapters import ALL_LINEAR
    from workshop.deepspeed.preflight import CUDA_CONTEXT_GIB, activation_gib

    states = full_states(model) if method == "full" else peft_states(
        model, method, r, targets or ALL_LINEAR, "bf16", stage=0)["gpu"]
    return states / 2**30 + activation_gib(model, *card_batch, 2) + CUDA_CONTEXT_GIB


def method_table(model, r=16, targets=None) -> list[dict]:
    """Full fine-tuning, LoRA and QLoRA of `model` on one GPU, and the largest BLOOM each fits on the CARDS."""
    from workshop.shapes import BLOOM_SHAPES

    rows = []
    for method in ("full", "lora", "qlora"):
        trainable = linear_layers(model)[1] if method == "full" else adapter_params(model, r, targets or "all-linear")
        row = {"method": method, "trainable_m": trainable / 1e6, "one_gpu_gib": one_gpu_gib(model, method, r, targets)}
        for card in CARDS_GIB:
            fits = [name for name in BLOOM_SHAPES if one_gpu_gib(name, method, r) <= card]
            row[f"largest BLOOM on {card} GB"] = fits[-1] if fits else "none"
        rows.append(row)
    return rows
