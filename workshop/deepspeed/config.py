"""Load a DeepSpeed JSON config and check it once, with errors that name the file and the key.

DeepSpeed itself ignores unknown top-level keys (a typo such as "zero_optimisation" silently runs
without ZeRO) and ignores offload_param below stage 3, so those checks are ours; everything inside
the sections is checked by DeepSpeed's own pydantic models and its DeepSpeedConfig.
"""

import copy
import difflib
import json
import logging
from contextlib import contextmanager
from pathlib import Path

import pydantic

from workshop.errors import WorkshopError


class ConfigError(WorkshopError, ValueError):
    """A DeepSpeed config the workshop refuses to run with; the message says file, key and why."""


# Every top-level key DeepSpeed 0.19.8's DeepSpeedConfig looks up (tests/test_ds_config.py records
# the lookups, so a DeepSpeed upgrade that reads a new key fails that test instead of our users).
TOP_LEVEL_KEYS = frozenset("""
    activation_checkpointing aio amp autotuning bf16 bfloat16 checkpoint comet comms_logger
    communication_data_type compile compression_training csv_monitor curriculum_learning
    data_efficiency data_parallel_size data_types dataloader_drop_last datastates_ckpt
    disable_allgather disable_python_gc dump_state eigenvalue elasticity expert_parallel
    flops_profiler fp16 gradient_accumulation_steps gradient_allreduce_op gradient_clipping
    gradient_predivide_factor graph_harvesting hybrid_engine log_level managed_gradient_accumulation
    memory_breakdown nebula optimizer pipeline prescale_gradients progressive_layer_drop
    quantize_training scheduler seq_parallel_communication_data_type sequence_parallel_size
    sparse_attention sparse_gradients steps_per_print tensor_parallel tensorboard timers
    torch_autocast train_batch_size train_micro_batch_size_per_gpu
    use_data_before_expert_parallelism vocabulary_size wall_clock_breakdown wandb
    weight_quantization zero_allow_untested_optimizer zero_force_ds_cpu_optimizer zero_optimization
""".split())

BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")


@contextmanager
def quiet_deepspeed():
    """Keep DeepSpeed's INFO/WARNING chatter (accelerator detection, config dumps) out of our output.

    A filter rather than a level: importing deepspeed resets its logger's level.
    """
    logger = logging.getLogger("DeepSpeed")
    only_errors = lambda record: record.levelno >= logging.ERROR  # noqa: E731
    logger.addFilter(only_errors)
    try:
        yield
    finally:
        logger.removeFilter(only_errors)


def _unknown(key, known):
    close = difflib.get_close_matches(key, known, n=1)
    return f"unknown key{f' (did you mean {close[0]!r}?)' if close else ''}"


def _check_section(path, section, model, values):
    """Validate one section with DeepSpeed's pydantic model, re-raising its first error as a ConfigError."""
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: {section} must be an object, got {values!r}")
    try:
        return model(**values)
    except pydantic.ValidationError as e:
        error = e.errors()[0]
        key = ".".join([section, *map(str, error["loc"])])
        if error["type"] == "extra_forbidden":
            known = [*model.model_fields, *(f.alias for f in model.model_fields.values() if f.alias)]
            why = _unknown(str(error["loc"][-1]), known) if len(error["loc"]) == 1 else "unknown key"
        else:
            why = f"{error['msg']} (got {error['input']!r})"
        raise ConfigError(f"{path}: {key}: {why}") from None


def _check_aio(path, aio):
    """DeepSpeed reads the `aio` section (NVMe offload's libaio settings) key by key and ignores the rest."""
    if aio is None:
        return
    from deepspeed.runtime.swap_tensor import constants

    known = [value for name, value in vars(constants).items() if name.startswith("AIO_") and isinstance(value, str)
             and not name.endswith("_DEFAULT") and name != "AIO_FORMAT"]
    if not isinstance(aio, dict):
        raise ConfigError(f"{path}: aio must be an object, got {aio!r}")
    for key in aio:
        if key not in known:
            raise ConfigError(f"{path}: aio.{key}: {_unknown(key, known)}")


def _check(path, cfg):
    with quiet_deepspeed():
        from deepspeed.runtime.config import DeepSpeedConfig, DeepSpeedConfigError
        from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{path}: {key}: {_unknown(key, TOP_LEVEL_KEYS)}")

    zero = cfg.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise ConfigError(f"{path}: zero_optimization must be an object, got {zero!r}")
    stage = zero.get("stage", 0)
    if type(stage) is not int or not 0 <= stage <= 3:  # "auto" or true would quietly mean stage 0
        raise ConfigError(f"{path}: zero_optimization.stage must be 0, 1, 2 or 3 (got {stage!r})")
    if "offload_param" in zero and stage < 3:
        raise ConfigError(f"{path}: zero_optimization.offload_param needs stage 3 (stage is {stage})")
    _check_section(path, "zero_optimization", DeepSpeedZeroConfig, zero)
    _check_aio(path, cfg.get("aio"))
    for section, model in (("fp16", DeepSpeedFP16Config), ("bf16", DeepSpeedBF16Config)):
        if section in cfg:
            _check_section(path, section, model, cfg[section])

    # The rest of DeepSpeed's checks (batch arithmetic, fp16 with bf16, ...) run when its
    # DeepSpeedConfig is built. It cannot do batch arithmetic on "auto", so leave those keys out
    # the way DeepSpeed handles missing ones; the Trainer fills them in later.
    resolved = {k: v for k, v in cfg.items() if not (k in BATCH_KEYS and v == "auto")}
    if "train_batch_size" not in resolved and "train_micro_batch_size_per_gpu" not in resolved:
        resolved["train_micro_batch_size_per_gpu"] = 1
    try:
        with quiet_deepspeed():
            DeepSpeedConfig(copy.deepcopy(resolved))  # it may fill in sections; keep cfg as written
    except pydantic.ValidationError as e:
        error = e.errors()[0]
        raise ConfigError(f"{path}: DeepSpeed rejects it: {e.title} {'.'.join(map(str, error['loc']))}: "
                          f"{error['msg']}") from None
    except (AssertionError, ValueError, TypeError, DeepSpeedConfigError) as e:
        raise ConfigError(f"{path}: DeepSpeed rejects it: {e}") from None


def load_ds_config(path) -> dict:
    """Read and check a DeepSpeed JSON config; returns the dict as written ("auto" values kept)."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    _check(path, cfg)
    return cfg


def _offloads(cfg):
    """(optimizer offload, parameter offload) as DeepSpeed reads them, defaults filled in."""
    with quiet_deepspeed():
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    zero = DeepSpeedZeroConfig(**cfg.get("zero_optimization", {}))
    on = lambda offload: offload if offload is not None and offload.device != "none" else None  # noqa: E731
    return zero.stage, on(zero.offload_optimizer), on(zero.offload_param)


def describe(cfg) -> str:
    """One line for logs and tables, e.g. 'ZeRO 2 + optimizer offload (pin_memory=false)', '... + ZenFlow'."""
    stage, optimizer, param = _offloads(cfg)
    pin = lambda offload: str(offload.pin_memory).lower()  # noqa: E731
    where = lambda offload: "" if offload.device == "cpu" else f" to {offload.device}"  # noqa: E731
    if optimizer and param and (optimizer.device, optimizer.pin_memory) == (param.device, param.pin_memory):
        return f"ZeRO {stage} + optimizer and parameter offload{where(param)} (pin_memory={pin(param)})"
    text = f"ZeRO {stage}"
    for name, offload in (("optimizer", optimizer), ("parameter", param)):
        if offload:
            text += f" + {name} offload{where(offload)} (pin_memory={pin(offload)})"
    return text + (" + ZenFlow" if (cfg.get("zero_optimization") or {}).get("zenflow") is not None else "")


def _adam(cfg):
    """True when DeepSpeed builds its own Adam(W) from the config's optimizer block."""
    optimizer = cfg.get("optimizer") or {}
    params = optimizer.get("params") or {}
    return str(optimizer.get("type", "")).lower() in ("adam", "adamw") and not params.get("torch_adam", False)


def needs_cpu_adam(cfg) -> bool:
    """Optimizer offload runs DeepSpeed's Adam on the CPU: the cpu_adam op, JIT-built on first use."""
    return _adam(cfg) and _offloads(cfg)[1] is not None


def zero_stage(cfg) -> int:
    """The ZeRO stage of a checked config (load_ds_config), 0 for none."""
    return (cfg or {}).get("zero_optimization", {}).get("stage", 0)


def needed_ops(cfg) -> list:
    """The DeepSpeed ops this config JIT-builds: its optimizer's, and async_io for NVMe offload (ops.py)."""
    _, optimizer, param = _offloads(cfg)
    nvme = ["async_io"] if "nvme" in {getattr(o.device, "value", o.device) for o in (optimizer, param) if o} else []
    if not _adam(cfg):
        return nvme
    return (["cpu_adam"] if needs_cpu_adam(cfg) else ["fused_adam"]) + nvme


def check_gpu_precision(cfg, ds_config, has_cuda: bool):
    """fp16 switched on explicitly (--fp16, --precision fp16, or "enabled": true under fp16 in the DeepSpeed JSON)
    needs a CUDA GPU. bf16 does not: PyTorch trains in bf16 on a CPU too (autocast; DeepSpeed's CPU backend).

    Without one, the Trainer or DeepSpeed would stop deep in their setup with a traceback; here it is one line.
    The default (fp16 unset, "auto" in the JSON) still falls back to fp32 with a notice (config.resolve_precision).
    """
    if has_cuda:
        return
    request = "request one (sbatch --gpus=1, or --gres=gpu:1)"
    if cfg.fp16 is True:
        flag = "--precision fp16" if cfg.precision == "fp16" else "--fp16"
        raise WorkshopError(f"{flag} needs a CUDA GPU and none is visible here: drop the flag (the run then trains "
                            f"in fp32; --precision bf16 also trains on a CPU) or {request}")
    values = (ds_config or {}).get("fp16")
    if isinstance(values, dict) and values.get("enabled") is True:
        raise WorkshopError(f"{cfg.deepspeed}: fp16.enabled is true, which needs a CUDA GPU, and none is visible "
                            f"here: set it to \"auto\" (it then follows --precision) or {request}")


def match_precision(path, ds_config: dict, fp16: bool, bf16: bool):
    """Make the DeepSpeed config train in the run's precision: a missing fp16/bf16 section becomes "auto" (the
    Trainer fills it in from the same fp16/bf16 it uses itself); an explicit one that disagrees is one error."""
    from workshop.config import precision_name

    wanted, precision = {"fp16": fp16, "bf16": bf16}, precision_name(fp16, bf16)
    for section in ("fp16", "bf16", "bfloat16"):
        enabled = ds_config.get(section, {}).get("enabled", "auto")
        if isinstance(enabled, bool) and enabled != wanted[section.replace("bfloat16", "bf16")]:
            raise WorkshopError(f"{path}: {section}.enabled is {str(enabled).lower()} but this run trains in "
                                f"{precision}: set it to \"auto\" (it then follows --precision) or use "
                                f"--precision {section.replace('bfloat16', 'bf16') if enabled else 'fp32'}")
    for section in ("fp16", "bf16"):
        if section not in ds_config and not (section == "bf16" and "bfloat16" in ds_config):
            ds_config[section] = {"enabled": "auto"}
