"""BLOOM models: the Hub's checkpoints, random-weight copies of their shapes, and an embedded tiny one.

`load_model("bigscience/bloom-560m")` is the lesson's real path (downloads, or reads the Hugging Face cache).
`init="random"` builds the same architecture with random weights: memory and speed figures are real, loss is not.
`bloom-tiny` ships inside the package (config + tokenizer) and needs no network at all.
"""
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BloomConfig, BloomForCausalLM
from transformers.integrations import is_deepspeed_zero3_enabled

from workshop.errors import WorkshopError
from workshop.shapes import BLOOM_SHAPES as SHORT_SHAPES, BLOOM_VOCAB

TINY_DIR = Path(__file__).parent / "assets" / "bloom-tiny"

# Hub id -> shape of the published checkpoint, so random-weight runs need no download.
BLOOM_SHAPES = {f"bigscience/{name}": shape for name, shape in SHORT_SHAPES.items()}
TINY = "bloom-tiny"


def resolve_model(name: str) -> str:
    """Map `560m`, `bloom-560m` or `bigscience/bloom-560m` to the Hub id; `tiny` to `bloom-tiny`."""
    short = name.removeprefix("bigscience/").removeprefix("bloom-")
    if short == "tiny":
        return TINY
    hub_id = f"bigscience/bloom-{short}"
    if hub_id in BLOOM_SHAPES:
        return hub_id
    if os.path.isdir(name):  # a local checkpoint, e.g. one saved by save_model()
        return name
    known = ", ".join(["bloom-tiny"] + [k.removeprefix("bigscience/") for k in BLOOM_SHAPES])
    raise WorkshopError(f"unknown model {name!r}; choose one of {known} or a local checkpoint folder")


def load_model(name: str, init: str = "pretrained", seed: int = 0, device: str | None = None):
    """Return (model, tokenizer) for a model name (see resolve_model); `device` builds random weights there."""
    model_id = resolve_model(name)
    if model_id == TINY:
        # There are no trained weights for the tiny model: its "pretrained" state is a seeded random init.
        tokenizer = AutoTokenizer.from_pretrained(TINY_DIR)
        torch.manual_seed(seed)
        return build(BloomConfig.from_pretrained(TINY_DIR)), tokenizer
    if init == "random":
        torch.manual_seed(seed)
        # Random init of 560M+ parameters takes seconds of CPU time; on the GPU it is instant.
        with torch.device(device or "cpu"):
            model = build(random_init_config(model_id))
        return model, _tokenizer_for_random_init(model_id)
    return _from_hub(model_id)


def build(config: BloomConfig) -> BloomForCausalLM:
    """A BLOOM model with random weights. Under ZeRO-3 (a TrainingArguments with a stage-3 DeepSpeed config exists)
    it is built already partitioned by deepspeed.zero.Init, as from_pretrained does, so no process ever holds
    the whole model: 28 GB of fp32 weights for bloom-7b1."""
    if is_deepspeed_zero3_enabled():
        return BloomForCausalLM._from_config(config)
    return BloomForCausalLM(config)


def parameter_count(model) -> int:
    """All parameters, also those ZeRO-3 has partitioned (their own tensors are then empty; ds_numel is the size)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


def random_init_config(model_id: str) -> BloomConfig:
    shape = BLOOM_SHAPES.get(model_id)
    if shape is None:  # a local folder
        return BloomConfig.from_pretrained(model_id)
    return BloomConfig(vocab_size=BLOOM_VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=3, **shape)


def _tokenizer_for_random_init(model_id: str):
    try:
        return AutoTokenizer.from_pretrained(model_id)
    except OSError:
        # Random weights make token identity irrelevant to memory and speed; the embedded tokenizer keeps the
        # run offline. Its ids all fall inside BLOOM's vocabulary.
        print(f"[workshop] notice: tokenizer of {model_id} is not cached; using the embedded tokenizer "
              "(memory and speed figures still hold, sequence lengths differ slightly).")
        return AutoTokenizer.from_pretrained(TINY_DIR)


def _from_hub(model_id: str):
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        model = AutoModelForCausalLM.from_pretrained(model_id, use_safetensors=True)
    except OSError as err:
        raise WorkshopError(
            f"cannot load {model_id}: it is not in the Hugging Face cache and the Hub is unreachable "
            f"({type(err).__name__}). On a login node with internet run `python -m workshop.prefetch "
            f"--model {model_id}`, then resubmit; or train with --init random or --profile tiny.") from err
    return model, tokenizer


def save_model(model, tokenizer, path):
    """Save weights (safetensors) and tokenizer so load_model(path) reads them back."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def load_saved(path):
    """Read back a folder written by save_model."""
    return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True), AutoTokenizer.from_pretrained(path)

