"""The lesson's settings in one place, each overridable from the command line.

Precedence: RunConfig's defaults < the lesson's recipe (RECIPES) < `--profile` < flags given on the command line.
Everything is validated once, as it is made (config_checks.validate), without torch or transformers (a bad flag
fails in a second); later code trusts a `RunConfig`. How the run trains in fp16, bf16 or fp32 is resolve_precision's
rule, applied once by workshop.deepspeed.plan.prepare.
"""
import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from workshop.config_checks import validate
from workshop.errors import WorkshopError  # noqa: F401  (re-exported: `from workshop.config import WorkshopError`)


# The settings in five sections, each a dataclass of its own; RunConfig is all of them, read flat (cfg.max_length),
# so the command line, the manifest's `settings` and every reader keep one name per setting.
@dataclass
class ModelData:
    """What to train, on what."""
    model: str = "bigscience/bloom-560m"
    init: str = "pretrained"          # "random": same shapes, random weights (memory and speed real, loss not)
    data: str = "hub"                 # "hub" (squad), "embedded", or a path to a SQuAD v1.1 JSON file
    subset_size: int = 500
    max_length: int = 512
    eval_fraction: float = 0.1        # the subset is split 90/10 into train and eval


@dataclass
class Trainer:
    """The lesson's TrainingArguments, under their own names: workshop.train passes them through as they are."""
    output_dir: str = "./bloom-qa-finetuned"
    num_train_epochs: float = 3
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    learning_rate: float = 5e-5
    warmup_steps: int = 0             # the learning rate rises linearly over these first optimizer steps
    weight_decay: float = 0.01
    eval_strategy: str = "epoch"
    save_strategy: str = "epoch"
    save_steps: int = 500             # with --save-strategy steps: a checkpoint every N optimizer steps
    logging_steps: int = 10
    seed: int = 42


@dataclass
class DeepSpeedMemory:
    """DeepSpeed, precision and memory (lessons 2 and 5 at their real sizes)."""
    deepspeed: Optional[str] = None   # path to a DeepSpeed JSON config
    fp16: Optional[bool] = None       # None: on unless --bf16; falls back to fp32 without a CUDA GPU
    bf16: bool = False
    precision: Optional[str] = None   # fp32|fp16|bf16: --fp16/--bf16 in one flag (PRECISIONS); None: as those say
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, more time
    gpu_memory_limit: Optional[float] = None  # GiB a process may allocate per GPU: 80 makes an H200 an H100 80GB
    host_memory_gib: Optional[float] = None   # the node's usable RAM for the preflight, when it is read wrongly
    nvme_path: Optional[str] = None           # where NVMe offload (stage3_offload_nvme) keeps its swap files
    fsdp: Optional[str] = None        # PyTorch's FSDP2 instead of ZeRO: full_shard|shard_grad_op|full_shard_offload
    fsdp_wrap_class: Optional[str] = None  # the module class FSDP2 shards by; None: the family's decoder layer


@dataclass
class Speed:
    """"Make it fast" (notebooks/04): each off by default, so the lesson's run stays the seed configuration."""
    padding: str = "max"              # "max": pad to max_length; "longest": to the batch's longest; "packed"
    optim: Optional[str] = None       # the Trainer's optimizer name (None: its default), e.g. adamw_torch_fused
    torch_compile: bool = False
    fused_loss: bool = False          # BLOOM's 250,880-way softmax without materialising the logits (Liger)
    chunked_loss: bool = False        # the same in plain PyTorch, chunk by chunk: torch.compile traces it
    attention: str = "eager"          # "sdpa": BLOOM's attention core through PyTorch's fused kernels
    fewer_syncs: bool = False         # real tokens counted on the device, read back once per log (fewer_syncs.py)
    torch_profiler: bool = False      # profile_top.txt and profile_trace.json.gz of a few steady steps (profiling.py)


@dataclass
class Bookkeeping:
    """Where the run is filed, what it keeps at the end, and how it stops when something fails."""
    profile: str = "lesson"
    lesson: str = "baseline"
    config_name: Optional[str] = None  # names the run folder; defaults to the lesson or DeepSpeed config name
    run_dir: Optional[str] = None      # defaults to logs/<config_name>-local<time>-<pid>
    save_final: bool = True           # the trained model in <output-dir>/final (--no-save-final: sweeps)
    score_answers: Optional[bool] = None  # EM/F1 of the saved model at the end; None: on with a CUDA GPU only
    score_limit: Optional[int] = None     # --score-answers on the first N held-out examples only
    dist_timeout: int = 300  # s a rank waits in a collective for a dead peer (torch's default: 30 minutes)
    resume: str = "auto"               # auto | never | a checkpoint-N folder: where training goes on (resume.py)
    diverge_patience: int = 3          # logged NaN/inf losses (or fp16 steps skipped at the minimum scale) in a row


@dataclass
class Peft:
    """Parameter-efficient fine-tuning (lesson 6, workshop/adapters.py): the base model frozen, small LoRA adapters
    trained beside its linear layers (lora), or the same over a 4-bit NF4 base (qlora, a CUDA GPU)."""
    peft: str = "none"                # none | lora | qlora
    lora_r: int = 16                  # the adapters' rank: each adapted layer gains r x (inputs + outputs) weights
    lora_alpha: int = 32              # the adapters' output is scaled by alpha / r
    lora_dropout: float = 0.05
    lora_targets: Optional[str] = None  # comma-separated module names; None: every linear layer of the family


SECTIONS = {"model and data": ModelData, "trainer": Trainer, "deepspeed and memory": DeepSpeedMemory, "speed": Speed,
            "peft": Peft, "bookkeeping": Bookkeeping}


@dataclass
class RunConfig(Bookkeeping, Peft, Speed, DeepSpeedMemory, Trainer, ModelData):  # fields in SECTIONS' order
    def run_name(self) -> str:
        """The config's name in run folders and manifests: --config-name, else the DeepSpeed config's or lesson's."""
        return self.config_name or (Path(self.deepspeed).stem if self.deepspeed else self.lesson)

    def section(self, section: type) -> dict:
        """One section's settings by name, e.g. cfg.section(Trainer): the Trainer's own arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(section)}


# `--profile tiny`: the embedded model and data at sizes a laptop or CI trains in a minute or two.
# The learning rate is higher because a 2-layer model from random weights learns nothing at 5e-5.
PROFILES = {
    "lesson": {},
    "tiny": dict(model="bloom-tiny", data="embedded", subset_size=200, max_length=160,
                 learning_rate=3e-3, logging_steps=2),
    # `--profile laptop`: a ~100M-parameter BLOOM (workshop/shapes.py) whose fp32 Adam states (1.6 GB) outweigh the
    # process's libraries, so ZeRO and offload show in a laptop's host memory. Short rows, one row an optimizer step
    # (a step's Adam update costs about as much as its 32 tokens), no checkpoints (1.2 GB each)
    "laptop": dict(model="bloom-laptop", data="embedded", subset_size=16, max_length=32, num_train_epochs=1,
                   per_device_train_batch_size=1, per_device_eval_batch_size=4, gradient_accumulation_steps=1,
                   learning_rate=3e-4, logging_steps=2, save_strategy="no", save_final=False),
}

CHOICES = {
    "init": ("pretrained", "random"),
    "eval_strategy": ("no", "epoch", "steps"),
    "save_strategy": ("no", "epoch", "steps"),  # the Trainer's "best" needs a metric to rank checkpoints by
    "profile": tuple(PROFILES),
    "padding": ("max", "longest", "packed"),
    "optim": ("adamw_torch", "adamw_torch_fused"),
    "attention": ("eager", "sdpa", "flex"),
    "precision": ("fp32", "fp16", "bf16"),
    "peft": ("none", "lora", "qlora"),
    "fsdp": ("full_shard", "shard_grad_op", "full_shard_offload"),
}
PRECISIONS = {"fp32": (False, False), "fp16": (True, False), "bf16": (False, True)}  # -> (fp16, bf16)
BOOLEAN_FLAGS = ("fp16", "bf16", "gradient_checkpointing", "torch_compile", "fused_loss", "chunked_loss",
                 "fewer_syncs", "torch_profiler", "save_final", "score_answers")


# --help lines for the knobs whose default alone does not say what they do
HELP = {
    "resume": "auto (default): go on from this config's latest whole checkpoint, of this run folder (a requeue) "
              "or of the newest earlier run of the same settings that did not complete (a resubmit); never: "
              "start from step 0; or the path of a checkpoint-N folder",
    "precision": "fp32, fp16 or bf16 for the Trainer and the DeepSpeed config at once (default: as --fp16/--bf16 "
                 "say; the lesson's fp16, fp32 without a GPU)",
    "gradient_checkpointing": "recompute activations in the backward pass: less memory, more time (default: off)",
    "fsdp": "shard with PyTorch's FSDP2 instead of DeepSpeed: full_shard (~ZeRO-3), shard_grad_op (~ZeRO-2), "
            "full_shard_offload (~ZeRO-3 + CPU offload); workshop/fsdp.py (default: off)",
    "fsdp_wrap_class": "with --fsdp: the module class each FSDP2 unit wraps (default: the family's decoder layer)",
    "score_answers": "EM/F1 of the saved model on the held-out examples at the end (default: on with a CUDA GPU)",
    "score_limit": "--score-answers on the first N held-out examples only (default: all)",
    "chunked_loss": "the loss from the last hidden states, 1024 tokens at a time, gradients in the forward pass: "
                    "no full-vocabulary logits kept, and torch.compile traces it (default: off)",
    "torch_profiler": "profile 3 optimizer steps from step 6 with torch.profiler: profile_top.txt (operators by "
                      "their own time) and profile_trace.json.gz (the timeline) in the run folder (default: off)",
    "lora_targets": "comma-separated module names to adapt (default: every linear layer of the model's family, "
                    "BLOOM's query_key_value,dense,dense_h_to_4h,dense_4h_to_h; all-linear: peft's own choice)",
    "fewer_syncs": "count real tokens on the GPU and read them back once per log, not after every micro-batch "
                   "(default: off, as the Trainer does it)",
}


# A lesson's defaults: what its entry changes about the baseline, named once by the lesson's name (as --profile
# names a size). Precedence: RunConfig's defaults < the lesson's recipe < --profile < the command line.
@dataclass(frozen=True)
class Recipe:
    defaults: dict = dataclasses.field(default_factory=dict)  # paths relative to the repository
    require_deepspeed: bool = False  # the lesson is about DeepSpeed: a run without a config is a mistake


REPO = Path(__file__).resolve().parents[1]
RECIPES = {
    "deepspeed_single_gpu": Recipe(require_deepspeed=True),
    # lesson 3: lesson 2's configs, stage 0 unless --ds-config says otherwise, on the model that fills a GPU
    "deepspeed_multi_gpu": Recipe(dict(model="bigscience/bloom-1b7",
                                       deepspeed="deepspeed_single_gpu/configs/stage0.json"), require_deepspeed=True),
    # lesson 6: LoRA adapters on a frozen base. Its learning rate is 10x full fine-tuning's 5e-5: the adapters start
    # at zero (B = 0) and are few, so each step must move them further than it moves a full model's weights; about
    # 10x is the usual LoRA rule (the PEFT and QLoRA papers train at 1e-4 to 3e-4 where full fine-tuning uses 1e-5
    # to 5e-5). --profile tiny keeps its own rate, as for every lesson.
    "lora": Recipe(dict(peft="lora", learning_rate=5e-4)),
}


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations (`--output` was taken for --output-dir, and then silently lost to the one a
    .slurm script appends), whose error line never echoes a token (`unrecognized arguments: --hub-token hf_...`
    went into train.out and the job's .out)."""

    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message):
        from workshop.redact import redact

        super().error(redact(message))


def _add_flags(parser):
    for title, section in SECTIONS.items():
        group = parser.add_argument_group(title, section.__doc__)
        for field in dataclasses.fields(section):
            _add_flag(group, field)
    parser.add_argument("--ds-config", dest="deepspeed", default=argparse.SUPPRESS, help="same as --deepspeed")
    parser.add_argument("--subset", dest="subset_size", type=int, default=argparse.SUPPRESS,
                        help="same as --subset-size")
    # The `deepspeed` launcher appends --local_rank=N; torchrun sets LOCAL_RANK instead. Either way the
    # Trainer reads the environment, so the flag is accepted and ignored.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)


def _add_flag(group, field):
    flag = "--" + field.name.replace("_", "-")
    if field.name in BOOLEAN_FLAGS:
        group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=HELP.get(field.name))
        return
    kind = {"num_train_epochs": float, "gpu_memory_limit": float, "host_memory_gib": float, "score_limit": int}.get(
        field.name, {int: int, float: float}.get(type(field.default), str))
    group.add_argument(flag, type=kind, choices=CHOICES.get(field.name), default=argparse.SUPPRESS,
                       metavar=None if field.name in CHOICES else field.name.upper(),
                       help=HELP.get(field.name, f"default: {field.default}"))


def parse_args(argv=None, lesson="baseline", require_deepspeed=False, lesson_flags=None, **lesson_defaults):
    """Build a validated RunConfig from the command line (sys.argv by default), the lesson's recipe and --profile.

    lesson_flags: a lesson's own flags, parsed in the same pass: an object with add_to(parser) and
    apply(settings, given) -> settings (deepspeed_multi_gpu/train.py's weak scaling)."""
    recipe = RECIPES.get(lesson, Recipe())
    parser = Parser(prog=f"{lesson}/train.py", description="Fine-tune BLOOM on SQuAD with the Hugging Face Trainer.")
    _add_flags(parser)
    if lesson_flags is not None:
        lesson_flags.add_to(parser)
    given = vars(parser.parse_args(sys.argv[1:] if argv is None else argv))
    given.pop("local_rank", None)
    ours = {name: given.pop(name) for name in list(given) if name not in RunConfig.__dataclass_fields__}
    defaults = {**recipe.defaults, **lesson_defaults}
    if "deepspeed" in recipe.defaults and "deepspeed" not in lesson_defaults:
        defaults["deepspeed"] = os.path.relpath(REPO / recipe.defaults["deepspeed"])  # from wherever it runs
    settings = {**vars(RunConfig()), "lesson": lesson, **defaults, **PROFILES[given.get("profile", "lesson")],
                **given}
    settings = use_precision(settings, given)
    if lesson_flags is not None:
        settings = lesson_flags.apply(settings, {**given, **ours})
    cfg = RunConfig(**settings)
    validate(cfg)
    if (require_deepspeed or recipe.require_deepspeed) and cfg.deepspeed is None:
        raise WorkshopError(f"the {lesson} lesson needs a DeepSpeed config: --ds-config "
                            f"{lesson}/configs/<stage>.json")
    return cfg


def use_precision(settings: dict, given: dict) -> dict:
    """--precision sets fp16 and bf16 together. An --fp16/--bf16 on the same command line must agree with it; one
    that overrides a lesson's or profile's precision wins (command line over defaults, as for every setting)."""
    precision = settings.get("precision")
    if precision is None:
        return settings
    if "precision" not in given and ("fp16" in given or "bf16" in given):
        return {**settings, "precision": None}
    for flag, value in zip(("fp16", "bf16"), PRECISIONS[precision]):
        if flag in given and given[flag] != value:
            spelled = f"--{flag}" if given[flag] else f"--no-{flag}"
            raise WorkshopError(f"--precision {precision} contradicts {spelled}: give only --precision")
    return {**settings, **dict(zip(("fp16", "bf16"), PRECISIONS[precision]))}


def resolve_precision(cfg: RunConfig, has_cuda: bool, bf16_supported: bool):
    """Return (fp16, bf16), printing a notice where the hardware lacks what was asked for. bf16 also trains on a
    CPU (autocast); fp16 only on a CUDA GPU, so an explicit fp16 without one already stopped (check_gpu_precision)."""
    bf16 = cfg.bf16
    fp16 = cfg.fp16 if cfg.fp16 is not None else not bf16  # the lesson trains in fp16 unless bf16 is asked for
    if fp16 and not has_cuda:
        print("[workshop] notice: fp16 needs a CUDA GPU; none is present, so this run trains in fp32.")
        fp16 = False
    if bf16 and not bf16_supported:
        print("[workshop] notice: bf16 is not supported by this GPU; this run trains in fp32.")
        bf16 = False
    return fp16, bf16


def precision_name(fp16: bool, bf16: bool) -> str:
    return "fp16" if fp16 else "bf16" if bf16 else "fp32"
