"""Causal LMs: the Hub's checkpoints, random-weight copies of published shapes, and embedded tiny ones.

`load_model("bigscience/bloom-560m")` is the lesson's real path (downloads, or reads the Hugging Face cache); so is
any other Hub causal-LM id (`--model Qwen/Qwen2-1.5B`): safetensors weights only, never the Hub's own code.
`init="random"` builds the same architecture with random weights: memory and speed figures are real, loss is not.
The shapes come from workshop/shapes.py (BLOOM and one member of each family, no download) or the cached config.
`bloom-tiny` and `<family>-tiny` (`llama-tiny`, ...) need no network at all: their tokenizer ships in the package.
"""
import json
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, BloomConfig
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from workshop.errors import WorkshopError
from workshop.names import BLOOM_SHAPES, FAMILY_IDS, LAPTOP, TINY, TINY_FAMILIES, resolve_model  # noqa: F401
from workshop.shapes import BLOOM_LAPTOP, BLOOM_VOCAB, FAMILIES

TINY_DIR = Path(__file__).parent / "assets" / "bloom-tiny"

# The embedded tokenizer's vocabulary and special ids: a config built for it carries them.
_TINY_CONFIG = json.loads((TINY_DIR / "config.json").read_text())
EMBEDDED_IDS = {key: _TINY_CONFIG[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id")}


def is_tiny(model_id: str) -> bool:
    """The embedded models: seeded random weights whatever --init says, nothing to download."""
    return model_id in (TINY, LAPTOP) or model_id in TINY_FAMILIES


def check_reachable(name: str, init: str = "pretrained"):
    """Fail in seconds, before the preflight and minutes of loading, when pretrained weights can be neither read
    from the cache nor downloaded (a compute node without internet): the fix is a prefetch, whatever else is wrong."""
    model_id = resolve_model(name)
    if init != "random" and not is_tiny(model_id) and not Path(model_id).is_dir():
        _hub_config(model_id)


def load_model(name: str, init: str = "pretrained", seed: int = 0, device: str | None = None):
    """Return (model, tokenizer) for a model name (see resolve_model); `device` builds random weights there."""
    model_id = resolve_model(name)
    if is_tiny(model_id):
        # There are no trained weights for the tiny models: their "pretrained" state is a seeded random init.
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(TINY_DIR))
        torch.manual_seed(seed)
        return build(model_config(model_id), seeded=True), tokenizer
    if init == "random":
        tokenizer = _tokenizer_for_random_init(model_id)
        embedded = Path(tokenizer.name_or_path) == TINY_DIR
        config = model_config(model_id, **(EMBEDDED_IDS if embedded else {}))
        torch.manual_seed(seed)
        # Random init of 560M+ parameters takes seconds of CPU time; on the GPU it is instant.
        with torch.device(device or "cpu"):
            model = build(config)
        return model, tokenizer
    return _from_hub(model_id)


def build(config, seeded=False):
    """A causal LM with random weights. Under ZeRO-3 (a TrainingArguments with a stage-3 DeepSpeed config exists)
    it is built already partitioned by deepspeed.zero.Init, as from_pretrained does, so no process ever holds
    the whole model: 28 GB of fp32 weights for bloom-7b1.

    `seeded`: an embedded model, whose seeded random weights are its "pretrained" state. zero.Init's construction
    draws other weights from the same seed, so under ZeRO-3 it is built whole (a few MB) and partitioned after
    (zero.Init(module=...)): the same start on every stage, which a saved LoRA adapter and --baseline rebuild."""
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    if not is_deepspeed_zero3_enabled():
        return model_class(config)
    if not seeded:
        return model_class._from_config(config)
    import deepspeed
    from transformers.integrations.deepspeed import deepspeed_config

    model = model_class(config)
    deepspeed.zero.Init(module=model, config_dict_or_path=deepspeed_config())
    return model


def parameter_count(model) -> int:
    """All parameters, also those ZeRO-3 has partitioned (their own tensors are then empty; ds_numel is the size)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


def model_config(model_id: str, local_only: bool = False, **overrides):
    """The config of a resolved model id, without weights: the shape tables first (no download), else the
    Hugging Face cache or the Hub (a config.json of a few KB; the cache alone with `local_only`: reporting never
    touches the network), else a local folder."""
    if model_id == TINY:
        return BloomConfig.from_pretrained(TINY_DIR, **overrides)
    if model_id == LAPTOP:
        return BloomConfig.from_pretrained(TINY_DIR, **{**BLOOM_LAPTOP, **overrides})
    if model_id in BLOOM_SHAPES:
        # overrides win (the embedded tokenizer's special-token ids, with --init random and no Hub tokenizer)
        return BloomConfig(**{"vocab_size": BLOOM_VOCAB, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3,
                              **BLOOM_SHAPES[model_id], **overrides})
    if model_id in TINY_FAMILIES:
        spec = FAMILIES[TINY_FAMILIES[model_id]]
        shape = {**spec["shape"], **spec["tiny"], "vocab_size": _TINY_CONFIG["vocab_size"], **EMBEDDED_IDS}
        return getattr(transformers, spec["config"])(**{**shape, **overrides})
    if model_id in FAMILY_IDS:
        spec = FAMILIES[FAMILY_IDS[model_id]]
        return getattr(transformers, spec["config"])(**{**spec["shape"], **overrides})
    return _hub_config(model_id, local_files_only=local_only, **overrides)


def random_init_config(model_id: str):
    """The config `--init random` builds for a model id (BLOOM's and the families' without a download)."""
    return model_config(model_id)


def _hub_config(model_id: str, **overrides):
    families = ", ".join(f"{family} ({spec['hub_id']})" for family, spec in FAMILIES.items())
    try:
        config = AutoConfig.from_pretrained(model_id, trust_remote_code=False, **overrides)
    except OSError as err:
        raise WorkshopError(
            f"cannot read the config of {model_id}: it is not in the Hugging Face cache and the Hub is unreachable "
            f"({type(err).__name__}). --init random knows without a download: bloom (bloom-560m, bloom-1b7, "
            f"bloom-3b, bloom-7b1), {families}; or on a login node run `python -m workshop.prefetch --model "
            f"{model_id}`") from err
    except ValueError as err:  # a model_type this transformers lacks, or one that needs the Hub's own code
        raise WorkshopError(f"{model_id} needs code from its Hub repository (trust_remote_code) or a newer "
                            f"transformers, and the workshop runs neither ({str(err).splitlines()[0]})") from err
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise WorkshopError(f"{model_id} is not a causal language model ({type(config).__name__} has no "
                            "AutoModelForCausalLM class)")
    return config


def prepare_tokenizer(tokenizer):
    """The training side of a tokenizer, whatever the family: pad with end-of-text where the family has no pad
    token (LLaMA, Mistral, GPT-NeoX and Falcon tokenizers have none). The padding side stays the publisher's
    (BLOOM's and the embedded tokenizer's: left): every family here places tokens relative to each other (ALiBi,
    rotary) or counts positions from the attention mask (OPT), so either side gives each real token the same
    context (left padding also scores the first token as predicted from a pad, as the lesson always has).
    Generation pads on the left itself (workshop.answer_quality)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenizer_record(tokenizer, model) -> dict:
    """What the manifest says about the tokenizer: which one, its ids, the model's vocabulary."""
    embedded = Path(tokenizer.name_or_path) == TINY_DIR
    return {"source": "embedded (workshop/assets/bloom-tiny)" if embedded else str(tokenizer.name_or_path),
            "ids": len(tokenizer), "model_vocab": model.config.vocab_size, "padding_side": tokenizer.padding_side}


def _tokenizer_for_random_init(model_id: str):
    try:
        return prepare_tokenizer(AutoTokenizer.from_pretrained(model_id))
    except (OSError, ValueError):
        # Random weights make token identity irrelevant to memory and speed; the embedded tokenizer keeps the
        # run offline. Its 2,048 ids all fall inside every listed vocabulary; the model keeps its published one.
        print(f"[workshop] notice: tokenizer of {model_id} is not cached; using the embedded tokenizer "
              "(memory and speed figures still hold, sequence lengths differ slightly).")
        return prepare_tokenizer(AutoTokenizer.from_pretrained(TINY_DIR))


def _from_hub(model_id: str):
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        model = AutoModelForCausalLM.from_pretrained(model_id, use_safetensors=True, trust_remote_code=False)
    except OSError as err:
        if _cached_config(model_id) and "safetensors" in str(err):
            raise WorkshopError(f"cannot load {model_id}: it has no safetensors weights (only pickled .bin files, "
                                "which the workshop does not load); train it with --init random or pick a "
                                "checkpoint that publishes safetensors") from err
        raise WorkshopError(
            f"cannot load {model_id}: it is not in the Hugging Face cache and the Hub is unreachable "
            f"({type(err).__name__}). On a login node with internet run `python -m workshop.prefetch "
            f"--model {model_id}`, then resubmit; or train with --init random or --profile tiny.") from err
    except ValueError as err:
        raise WorkshopError(f"cannot load {model_id} as a causal LM without its Hub code ({str(err).splitlines()[0]}); "
                            "the workshop does not run trust_remote_code models") from err
    return model, prepare_tokenizer(tokenizer)


def _cached_config(model_id: str) -> bool:
    try:
        AutoConfig.from_pretrained(model_id, trust_remote_code=False)
    except (OSError, ValueError):
        return False
    return True


def save_model(model, tokenizer, path):
    """Save weights (safetensors) and tokenizer so load_model(path) reads them back."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def load_saved(path):
    """Read back a folder written by save_model."""
    return (AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False),
            prepare_tokenizer(AutoTokenizer.from_pretrained(path)))
