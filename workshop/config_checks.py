"""The checks a RunConfig passes once, where it is made (config.parse_args): each bad value is one line naming its
flag (exit 2, workshop.entry), before any model, data or DeepSpeed is touched."""

import math
import os
import re
from pathlib import Path

from workshop.errors import WorkshopError


def validate(cfg):
    from workshop.names import resolve_model  # raises WorkshopError for an unknown name

    resolve_model(cfg.model)
    if cfg.subset_size < 2:
        raise WorkshopError(f"--subset-size must be at least 2 (got {cfg.subset_size})")
    if not 0 < cfg.eval_fraction < 1:
        raise WorkshopError(f"--eval-fraction must be between 0 and 1 (got {cfg.eval_fraction})")
    if max(1, round(cfg.subset_size * cfg.eval_fraction)) >= cfg.subset_size:
        raise WorkshopError(f"--eval-fraction {cfg.eval_fraction} of --subset-size {cfg.subset_size} leaves no "
                            "example to train on")
    for name in ("num_train_epochs", "learning_rate"):
        if not math.isfinite(getattr(cfg, name)) or getattr(cfg, name) <= 0:
            raise WorkshopError(f"--{name.replace('_', '-')} must be a positive number (got {getattr(cfg, name)})")
    if cfg.max_steps == 0 or cfg.max_steps < -1:
        raise WorkshopError(f"--max-steps must be at least 1, or -1 for the epochs' steps (got {cfg.max_steps})")
    for name in ("logging_steps", "save_steps"):
        if getattr(cfg, name) < 1:
            raise WorkshopError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(cfg, name)})")
    if cfg.warmup_steps < 0:
        raise WorkshopError(f"--warmup-steps must be 0 or more (got {cfg.warmup_steps})")
    if not 0 <= cfg.seed < 2**32:  # numpy's seeds, which the Trainer sets from it
        raise WorkshopError(f"--seed must be between 0 and 2**32 - 1 (got {cfg.seed})")
    if cfg.config_name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", cfg.config_name):
        raise WorkshopError(f"--config-name names a folder under logs/: letters, digits, '.', '_' and '-' only, "
                            f"not starting with '.' (got {cfg.config_name!r})")
    if cfg.resume not in ("auto", "never") and not os.path.isdir(cfg.resume):
        raise WorkshopError(f"--resume takes auto, never or a checkpoint folder; {cfg.resume!r} is none of them")
    for name in ("output_dir", "run_dir"):
        if getattr(cfg, name) is not None:
            check_writable_dir(getattr(cfg, name), f"--{name.replace('_', '-')}")
    if cfg.max_length < 16:
        raise WorkshopError(f"--max-length must be at least 16 (got {cfg.max_length})")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(cfg, name) < 1:
            raise WorkshopError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(cfg, name)})")
    if cfg.data not in ("hub", "embedded") and not os.path.isfile(cfg.data):
        raise WorkshopError(f"--data must be 'hub', 'embedded' or a SQuAD JSON file; {cfg.data!r} does not exist")
    if cfg.deepspeed is not None and not os.path.isfile(cfg.deepspeed):
        raise WorkshopError(f"--deepspeed: no such file {cfg.deepspeed!r}")
    for name in ("gpu_memory_limit", "host_memory_gib"):
        if getattr(cfg, name) is not None and getattr(cfg, name) <= 0:
            raise WorkshopError(f"--{name.replace('_', '-')} must be a positive number of GiB "
                                f"(got {getattr(cfg, name)})")
    for name in ("dist_timeout", "diverge_patience", *(("score_limit",) if cfg.score_limit is not None else ())):
        if getattr(cfg, name) < 1:
            raise WorkshopError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(cfg, name)})")
    if cfg.fp16 and cfg.bf16:
        raise WorkshopError("choose one of --fp16 and --bf16")
    from workshop.adapters import check as check_peft

    check_peft(cfg)
    check_fsdp(cfg)
    if cfg.fused_loss and cfg.chunked_loss:
        raise WorkshopError("choose one of --fused-loss (Liger's kernel) and --chunked-loss (plain PyTorch)")


def check_fsdp(cfg):
    if cfg.fsdp and cfg.deepspeed:
        raise WorkshopError(f"choose one of --fsdp {cfg.fsdp} (PyTorch's FSDP2) and --deepspeed {cfg.deepspeed} "
                            "(ZeRO): both shard the model, only one can")
    if cfg.fsdp_wrap_class is not None:  # the model's classes: torch and transformers load, for this flag only
        from workshop.fsdp import check_wrap_class

        check_wrap_class(cfg)


def check_writable_dir(path, flag):
    """A folder the run may create or write into: refused up front, not at the first save after every step."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise WorkshopError(f"{flag} {path} is a file, not a folder")
    existing = next(parent for parent in (target, *target.parents) if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise WorkshopError(f"{flag} {path}: {existing} is not writable by this user")
