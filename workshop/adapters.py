"""LoRA and QLoRA's settings, checked at the edge without torch (workshop/config_checks.py calls check()).

Which layers LoRA adapts: `--lora-targets` or, by default, every linear layer of the model's family (the table
LINEAR_LAYERS in workshop/shapes.py; BLOOM's query_key_value, dense, dense_h_to_4h, dense_4h_to_h). A model outside
the listed families (another Hub id, a local folder) gets peft's own "all-linear". The adapters themselves are the
Hugging Face `peft` library's (workshop/peft_model.py).
"""
import json

from workshop.errors import WorkshopError
from workshop.names import BLOOM_SHAPES, FAMILY_IDS, LAPTOP, TINY, TINY_FAMILIES, resolve_model
from workshop.shapes import LINEAR_LAYERS

ALL_LINEAR = "all-linear"  # peft's name for every linear layer but the output head
LORA_FLAGS = ("lora_r", "lora_alpha", "lora_dropout", "lora_targets")


def family_of(model: str) -> str | None:
    """The family key of a --model name (bloom, llama, ...), or None where only its config can tell."""
    model_id = resolve_model(model)
    if model_id in (TINY, LAPTOP) or model_id in BLOOM_SHAPES:
        return "bloom"
    return TINY_FAMILIES.get(model_id) or FAMILY_IDS.get(model_id)


def targets(cfg) -> list[str] | str:
    """The module names LoRA adapts: the flag's list, else the family's linear layers, else peft's all-linear."""
    if cfg.lora_targets:
        names = [name.strip() for name in cfg.lora_targets.split(",") if name.strip()]
        return ALL_LINEAR if names == [ALL_LINEAR] else names
    family = family_of(cfg.model)
    return list(LINEAR_LAYERS[family]) if family in LINEAR_LAYERS else ALL_LINEAR


def check(cfg):
    """Each bad LoRA setting is one line naming its flag; a LoRA flag without --peft would change nothing, silently."""
    from workshop.config import Peft

    if cfg.peft == "none":
        stray = [name for name in LORA_FLAGS if getattr(cfg, name) != getattr(Peft, name)]
        if stray:
            raise WorkshopError(f"--{stray[0].replace('_', '-')} needs --peft lora or --peft qlora (it has no effect "
                                "on full fine-tuning)")
        return
    if cfg.lora_r < 1:
        raise WorkshopError(f"--lora-r must be at least 1 (got {cfg.lora_r})")
    if cfg.lora_alpha < 1:
        raise WorkshopError(f"--lora-alpha must be at least 1 (got {cfg.lora_alpha})")
    if not 0 <= cfg.lora_dropout < 1:
        raise WorkshopError(f"--lora-dropout must be at least 0 and below 1 (got {cfg.lora_dropout})")
    chosen, family = targets(cfg), family_of(cfg.model)
    if chosen != ALL_LINEAR and not chosen:
        raise WorkshopError(f"--lora-targets names no module (got {cfg.lora_targets!r})")
    if chosen != ALL_LINEAR and family in LINEAR_LAYERS:
        unknown = [name for name in chosen if name not in LINEAR_LAYERS[family]]
        if unknown:
            raise WorkshopError(f"--lora-targets: {', '.join(unknown)} is not a linear layer of {cfg.model} "
                                f"({family}: {','.join(LINEAR_LAYERS[family])}, or {ALL_LINEAR})")
    if cfg.peft == "qlora":
        check_qlora(cfg)


def check_qlora(cfg):
    """What QLoRA cannot be combined with, said before anything loads (a CUDA GPU is checked once torch is up)."""
    if not cfg.bf16:
        raise WorkshopError("--peft qlora computes in bf16 over its 4-bit weights: add --bf16 (or --precision bf16)")
    if cfg.deepspeed and zero_stage(cfg.deepspeed) == 3:
        raise WorkshopError("--peft qlora under ZeRO 3: the workshop does not partition 4-bit weights; use the "
                            "plain Trainer or ZeRO 0-2 (the 4-bit base already fits where ZeRO 3 would be needed)")


def zero_stage(path) -> int | None:
    """The config's ZeRO stage, or None where the file cannot be read (load_ds_config says why, later)."""
    try:
        with open(path) as file:
            return int(json.load(file).get("zero_optimization", {}).get("stage", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
