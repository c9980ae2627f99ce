"""LoRA and QLoRA with Hugging Face `peft`: the frozen base wrapped with adapters, and a saved adapter read back.

`--peft lora`: get_peft_model(model, LoraConfig(...)) over the linear layers workshop/adapters.py names; only the
adapters train (requires_grad), so the optimizer holds states for them alone. `--peft qlora`: the same over a base
whose linear layers bitsandbytes holds in 4-bit NF4 (bf16 compute), on a CUDA GPU.

A run's `<output_dir>/final` is then the adapter alone (adapter_config.json + adapter_model.safetensors, a few MB):
load_run_model() rebuilds the base as the training did (the manifest's model, init and seed) and puts the adapter on
it; `python -m workshop.merge` folds it into the base for a plain Hugging Face model.
"""
import tempfile
from pathlib import Path

import torch

from workshop.adapters import targets
from workshop.errors import WorkshopError

ADAPTER_CONFIG = "adapter_config.json"


def check_qlora_device(cuda: bool):
    """QLoRA's 4-bit layers are bitsandbytes'. On a CUDA GPU they are its kernels; without one, its CPU backend
    (bitsandbytes 0.50.2 trained the tiny model's adapters on this workshop's 2-core dev machine, slowly, in plain
    PyTorch). Without bitsandbytes (an optional dependency: pip install '.[qlora]') the run stops before loading."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        where = "" if cuda else (" (without a CUDA GPU, as here, its CPU backend; or use --peft lora on this "
                                 "machine)")
        raise WorkshopError(f"--peft qlora needs the bitsandbytes package for its 4-bit NF4 layers{where}: "
                            "pip install bitsandbytes") from None


def lora_config(cfg):
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets(cfg), bias="none")


def quantized(model, cuda: bool):
    """The same weights with their linear layers in 4-bit NF4 (bf16 compute), through a folder: transformers
    quantizes while it loads, so a model built here (tiny, --init random) is saved once and loaded back."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from peft import prepare_model_for_kbit_training

    nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                             bnb_4bit_use_double_quant=True)
    with tempfile.TemporaryDirectory(prefix="qlora-base-") as folder:
        model.save_pretrained(folder)
        quantized_model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=nf4,
                                                               dtype=torch.bfloat16, device_map={"": 0 if cuda else "cpu"})
    return prepare_model_for_kbit_training(quantized_model, use_gradient_checkpointing=False)


def apply_peft(model, cfg, cuda: bool):
    """The model with LoRA adapters (QLoRA: over its 4-bit copy); returns it and the manifest's `peft` record."""
    from peft import get_peft_model

    if cfg.peft == "qlora":
        model = quantized(model, cuda)
    try:
        model = get_peft_model(model, lora_config(cfg))
    except ValueError as err:  # a --lora-targets name this model lacks (a family the edge check does not know)
        raise WorkshopError(f"--lora-targets: {str(err).splitlines()[0]}") from err
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()  # the frozen embeddings' output must carry gradients into the blocks
    trainable, total = trainable_parameters(model)
    print(f"[workshop] {cfg.peft}: {trainable:,} trainable parameters of {total:,} ({100 * trainable / total:.3f}%), "
          f"rank {cfg.lora_r} on {targets(cfg)}", flush=True)
    return model, {"method": cfg.peft, "r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                   "targets": targets(cfg), "trainable_parameters": trainable, "total_parameters": total}


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, all) parameters, also under ZeRO 3 (a partitioned tensor's own size is 0; ds_numel is its size).
    A 4-bit layer packs two weights a byte: bitsandbytes' Params4bit counts its packed bytes, quant_state its shape."""
    def size(p):
        shape = getattr(getattr(p, "quant_state", None), "shape", None)
        return shape.numel() if shape is not None else getattr(p, "ds_numel", p.numel())

    trainable = sum(size(p) for p in model.parameters() if p.requires_grad)
    return trainable, sum(size(p) for p in model.parameters())


def save_adapter(model, tokenizer, folder, is_main: bool):
    """The adapter into `folder`. Under ZeRO 3 each process holds a slice of every adapter weight (its own tensor
    is empty, Size([0])): they are gathered first, by every process, and written by the first."""
    import deepspeed

    trained = [p for p in model.parameters() if p.requires_grad]
    with deepspeed.zero.GatheredParameters(trained, enabled=any(hasattr(p, "ds_id") for p in trained)):
        if is_main:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)


def is_adapter(folder) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def load_run_model(settings: dict, folder):
    """(model, tokenizer) of a saved run: a plain model folder as it is, an adapter on its rebuilt base."""
    from workshop.model import load_model, load_saved

    if not is_adapter(folder):
        return load_saved(folder)
    from peft import PeftModel
    from transformers import AutoTokenizer

    from workshop.model import is_tiny, prepare_tokenizer
    from workshop.names import resolve_model

    if settings["init"] == "random" and not is_tiny(resolve_model(settings["model"])):
        raise WorkshopError(f"{folder} is a LoRA adapter over random weights (--init random) that were never saved: "
                            "only a pretrained (or embedded tiny) base can be rebuilt to put it on")
    base, _ = load_model(settings["model"], init=settings["init"], seed=settings["seed"])
    model = PeftModel.from_pretrained(base, folder)
    return model.eval(), prepare_tokenizer(AutoTokenizer.from_pretrained(folder))
