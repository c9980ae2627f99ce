"""The one training entry every lesson uses: `python -m workshop.train [flags]` (see --help).

Read `train()` top to bottom: it is the whole lesson. `main()` wraps it with the run folder and with
error handling that always records how the run ended.
"""
import atexit
import math
import os
import signal
import socket
import sys
from datetime import timedelta
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from workshop.bloom_attention import use_attention
from workshop.config import RunConfig, parse_args, precision_name, resolve_precision
from workshop.errors import WorkshopError
from workshop.data import collator, load_squad, pack, real_tokens, split, tokenize
from workshop.ds_config import check_gpu_precision, load_ds_config, match_precision, needed_ops, zero_stage
from workshop.guards import (DivergenceCallback, RunStopped, diverged_stop, disk_full_stop, is_disk_full,
                             is_lost_rank, last_whole_checkpoint, lost_rank_stop, set_aside_partial)
from workshop.fused_loss import check_supported as check_fused_loss, use_fused_loss
from workshop.model import load_model, parameter_count, resolve_model, save_model, tokenizer_record
from workshop.prebuild_ops import build, setup_build_env
from workshop.preflight import emulated_card, preflight
from workshop.runlog import RunLog, StepsCallback, cuda_memory_now, default_run_dir, describe_cuda_memory
from workshop.speed import SpeedCallback, flops_per_token, matmul_parameters
from workshop.startup import STARTUP


# transformers 5 renamed the Trainer's gradient_checkpointing (a deprecated alias now) to activation_checkpointing
CHECKPOINTING = next(name for name in ("activation_checkpointing", "gradient_checkpointing")
                     if name in TrainingArguments.__dataclass_fields__)


def training_arguments(cfg: RunConfig, ds_config: dict | None = None) -> TrainingArguments:
    cuda = torch.cuda.is_available()
    fp16, bf16 = resolve_precision(cfg, cuda, torch.cuda.is_bf16_supported() if cuda else True)
    if ds_config is not None:
        match_precision(cfg.deepspeed, ds_config, fp16, bf16)
    return TrainingArguments(
        output_dir=cfg.output_dir,
        eval_strategy=cfg.eval_strategy,
        save_strategy=cfg.save_strategy,
        save_steps=cfg.save_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        fp16=fp16,
        bf16=bf16,
        use_cpu=bf16 and not cuda,  # the Trainer refuses bf16 without a GPU unless told it is a CPU run
        **{CHECKPOINTING: cfg.gradient_checkpointing},
        torch_compile=cfg.torch_compile,
        **({"optim": cfg.optim} if cfg.optim else {}),
        include_num_input_tokens_seen="non_padding",  # real tokens, for workshop.speed
        logging_steps=cfg.logging_steps,
        logging_nan_inf_filter=False,
        ddp_timeout=cfg.dist_timeout,  # a NaN/inf loss must show (the Trainer would log the earlier mean instead)
        seed=cfg.seed,
        deepspeed=ds_config,
        push_to_hub=False,
        report_to="none",
        **_cpu_deepspeed_state(ds_config, cfg.dist_timeout),
    )


def _cpu_deepspeed_state(ds_config: dict | None, timeout_s: int) -> dict:
    """Several DeepSpeed processes on a machine without a GPU (tests, CI, a laptop): make the Trainer count them.

    accelerate picks a communication backend only for devices it knows (nccl for CUDA, ...); on a plain CPU it
    leaves none and then reports one process, so the Trainer fills DeepSpeed's "auto" train_batch_size for a
    world of 1 and DeepSpeed, which sees them all, stops (`train_batch_size ... 16 != 4 * 4 * 2`). ddp_backend
    does not help: the Trainer ignores it under DeepSpeed. So here, and only here, the shared state is set up
    first with DeepSpeed's own CPU backend (ccl or gloo) and the Trainer is told to use it. On a GPU node this
    returns {} and nothing changes.
    """
    if ds_config is None or torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return {}
    from accelerate import PartialState
    from deepspeed.accelerator import get_accelerator

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # as the Trainer does: start deepspeed.comm, not plain torch
    try:
        PartialState(backend=get_accelerator().communication_backend_name(), timeout=timedelta(seconds=timeout_s))
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    return {"accelerator_config": {"use_configured_state": True}}


def load_deepspeed_config(cfg: RunConfig):
    if cfg.deepspeed is None:
        return None
    setup_build_env()  # reuse ops built by `python -m workshop.prebuild_ops`; fix TORCH_CUDA_ARCH_LIST=9.0a
    ds_config = load_ds_config(cfg.deepspeed)
    use_nvme_path(cfg, ds_config)
    # The JSON files spell out the lesson's optimizer. A flag or profile that changes the same setting wins,
    # visibly: the Trainer would otherwise stop on the mismatch.
    params = ds_config.get("optimizer", {}).get("params", {})
    for key, value in (("lr", cfg.learning_rate), ("weight_decay", cfg.weight_decay)):
        if key in params and params[key] != "auto" and params[key] != value:
            print(f"[workshop] notice: optimizer.params.{key} {params[key]} in {cfg.deepspeed} "
                  f"replaced by {value} from the command line / --profile {cfg.profile}")
            params[key] = value
    return ds_config


def use_nvme_path(cfg: RunConfig, ds_config: dict):
    """--nvme-path replaces the config's nvme_path in each section that offloads to NVMe (ZeRO-Infinity), and the
    parameter swap buffers grow to the model's largest tensor (DeepSpeed stops at start-up if one does not fit;
    each buffer is pinned host memory, so the config keeps them small for small models)."""
    zero = ds_config.get("zero_optimization", {})
    sections = [zero[key] for key in ("offload_optimizer", "offload_param")
                if isinstance(zero.get(key), dict) and zero[key].get("device") == "nvme"]
    if cfg.nvme_path and not sections:
        print(f"[workshop] notice: --nvme-path ignored: {cfg.deepspeed} offloads nothing to NVMe")
    for section in sections:
        section["nvme_path"] = cfg.nvme_path or section.get("nvme_path")
    param = zero.get("offload_param") or {}
    largest = largest_tensor(cfg.model)
    if param.get("device") == "nvme" and largest and param.get("buffer_size", 1e8) < largest:
        print(f"[workshop] notice: offload_param.buffer_size {param.get('buffer_size', 1e8):,.0f} raised to "
              f"{largest:,} elements, the largest tensor of {cfg.model} (its embedding)")
        param["buffer_size"] = largest


def largest_tensor(model: str) -> int | None:
    from workshop.estimate import param_counts

    try:
        return param_counts(model)[1]
    except WorkshopError:  # no config to count from: loading the model will say why
        return None


def cap_gpu_memory(cfg: RunConfig):
    """--gpu-memory-limit: PyTorch's allocator may take at most that much of this process's GPU, so a large card
    behaves like the class's smaller one. Returns (manifest record, GiB the run may use per GPU or None)."""
    if not torch.cuda.is_available():
        if cfg.gpu_memory_limit:
            print(f"[workshop] notice: --gpu-memory-limit {cfg.gpu_memory_limit:g} ignored: no CUDA GPU here")
        return None, None
    device = int(os.environ.get("LOCAL_RANK", "0"))
    total = torch.cuda.get_device_properties(device).total_memory / 2**30
    if not cfg.gpu_memory_limit:
        return None, total
    limit = min(cfg.gpu_memory_limit, total)
    torch.cuda.set_per_process_memory_fraction(limit / total, device)
    card = emulated_card(cfg.gpu_memory_limit)
    print(f"[workshop] GPU memory capped at {limit:g} of {total:.1f} GiB (emulates {card})", flush=True)
    return {"gib": float(cfg.gpu_memory_limit), "emulates": card}, limit


def load_ops(ds_config: dict):
    """Load (or, the first time on this machine, build) the DeepSpeed ops this config uses, before the Trainer's
    clock starts: train_runtime then never holds a JIT build. In this process, so a job starts no extra Python."""
    for op in needed_ops(ds_config):
        seconds = build(op)
        if seconds > 30:  # a real compile, not a load: say how to keep it out of the next class's jobs
            print(f"[workshop] built DeepSpeed's {op} in {seconds:.0f} s; builds are kept and reused "
                  "(`python -m workshop.prebuild_ops` on a GPU node does it before class)", flush=True)
    atexit.register(remove_shm_buffers)


def remove_shm_buffers():
    """Remove this job's DeepSpeed shared-memory buffers from /dev/shm (at exit; a no-op where there are none).

    Without a GPU, DeepSpeed's communication backend gives each rank a 66 MiB buffer in /dev/shm and never
    removes it. /dev/shm is RAM: a day of runs on one node filled 20.8 of its 23.5 GiB and the kernel began
    killing compilers and trainings. By exit every rank has mapped the others' buffers, so unlinking them is
    safe; the master port in the name is this job's alone. slurm/common.sh catches a training that was killed.
    """
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if addr and port:
        for buffer in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_*"):
            buffer.unlink(missing_ok=True)


def train(cfg: RunConfig, run: RunLog):
    ds_config = load_deepspeed_config(cfg)  # first: a typo in the JSON fails before minutes of loading
    check_gpu_precision(cfg, ds_config, torch.cuda.is_available())  # and so does fp16 on a machine without a GPU
    limit, gpu_gib = cap_gpu_memory(cfg)
    estimate, refusal = preflight(cfg, ds_config, gpu_gib)  # before anything big is loaded
    run.update(gpu_memory_limit=limit, preflight=estimate)
    if refusal:
        raise WorkshopError(refusal)
    if ds_config is not None:
        load_ops(ds_config)
        STARTUP.mark("ops_loaded")
    # The arguments come before the model: with a ZeRO-3 config they make the model be built partitioned
    # (deepspeed.zero.Init, in from_pretrained and in workshop.model.build) for as long as they exist.
    args = training_arguments(cfg, ds_config)
    STARTUP.mark("arguments_ready")
    run.update(precision=precision_name(args.fp16, args.bf16),
               zero_stage=zero_stage(ds_config) if ds_config is not None else None)
    model, tokenizer = load_model(cfg.model, init=cfg.init, seed=cfg.seed, device=build_device(ds_config))
    STARTUP.mark("model_built")
    partitioned = sum(hasattr(p, "ds_id") for p in model.parameters())
    if partitioned:
        print(f"[workshop] ZeRO-3: model created partitioned (deepspeed.zero.Init): {partitioned} parameter "
              "tensors, none whole in this process", flush=True)
    run.update(created_partitioned=partitioned, tokenizer=tokenizer_record(tokenizer, model),
               attention_layers_replaced=use_attention(model, cfg.attention))
    if cfg.fused_loss:
        check_fused_loss(ds_config)
        use_fused_loss(model, on_gpu=torch.cuda.is_available())
    dataset = load_squad(cfg.subset_size, source=cfg.data)
    rows = tokenize(dataset, tokenizer, cfg.max_length, pad=cfg.padding == "max")
    train_set, eval_set = split(rows, cfg.eval_fraction, cfg.seed)
    if cfg.padding == "packed":
        train_set = pack(train_set, cfg.max_length)  # eval keeps one example a row: its loss compares across runs
    STARTUP.mark("data_ready")

    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                      data_collator=collator(tokenizer, cfg.padding), processing_class=tokenizer,
                      callbacks=[run.callback(), StepsCallback(run), STARTUP.callback(run)])
    STARTUP.mark("trainer_built")
    parameters = parameter_count(model)
    mean_length = real_tokens(train_set) / len(train_set)
    trainer.add_callback(SpeedCallback(run, flops_per_token(model.config, matmul_parameters(model), mean_length)))
    steps_per_epoch = math.ceil(len(trainer.get_train_dataloader()) / cfg.gradient_accumulation_steps)
    guard = DivergenceCallback(cfg.diverge_patience)
    trainer.add_callback(guard)
    run.update(train_samples=len(train_set), eval_samples=len(eval_set), parameters=parameters,
               padding=cfg.padding, mean_train_row_tokens=round(mean_length, 1), steps_per_epoch=steps_per_epoch,
               steps_planned=math.ceil(steps_per_epoch * cfg.num_train_epochs), steps_done=0)
    print(f"[workshop] training {cfg.model} ({run.manifest['parameters'] / 1e6:.1f} M parameters) on "
          f"{len(train_set)} examples, evaluating on {len(eval_set)}; logs in {run.dir}", flush=True)

    # [failures] A requeued job (or a rerun with the same --run-dir) goes on from its latest checkpoint-*.
    # Only then: a fresh run must not pick up an older run's checkpoints from a shared --output-dir.
    # Never from a checkpoint a full disk or a kill left half-written: only one with its trainer_state.json.
    earlier = run.manifest["attempts"] and Path(cfg.output_dir).is_dir()
    if earlier and run.enabled and (partial := set_aside_partial(cfg.output_dir)):
        print(f"[workshop] removed half-written {', '.join(partial)} (an earlier attempt's write failed)", flush=True)
    resume = last_whole_checkpoint(cfg.output_dir) if earlier else None
    if resume:
        print(f"[workshop] resuming from {resume} (attempt {len(run.manifest['attempts'])})", flush=True)
        run.update(resumed_from=resume)
    print(f"[workshop] rank {os.environ.get('RANK', '0')} of {os.environ.get('WORLD_SIZE', '1')} on "
          f"{socket.gethostname()}", flush=True)
    guard.trainer = trainer  # its DeepSpeed engine (fp16 loss scale) exists only once train() has begun
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except Exception as err:
        if is_disk_full(err, cfg.output_dir):
            raise disk_full_stop(err, cfg.output_dir, run.enabled) from err
        if is_lost_rank(err):
            raise lost_rank_stop(err, cfg.dist_timeout) from err
        raise
    # what the Trainer really did to the model (under ZeRO too), not only what was asked for
    run.update(gradient_checkpointing=any(getattr(m, "gradient_checkpointing", False) is True
                                          for m in trainer.model.modules()))
    if guard.reason:
        raise diverged_stop(guard, cfg.output_dir, cfg.learning_rate, run.enabled)
    if trainer.state.global_step < run.manifest["steps_planned"]:
        print(f"[workshop] stopped by --max-steps: {trainer.state.global_step:,} of the lesson's "
              f"{run.manifest['steps_planned']:,} steps; runtimes in this run folder are not the lesson's total",
              flush=True)
    # every rank prints the loss it saw: they must agree (the Trainer averages it over the ranks)
    print(f"[workshop] rank {os.environ.get('RANK', '0')} on {socket.gethostname()}: "
          f"train_loss {result.training_loss:.6f}", flush=True)
    if cfg.eval_strategy != "no" and not _evaluated_at(trainer.state):
        trainer.evaluate()  # a --max-steps run that stops mid-epoch still ends with an eval loss
    if cfg.save_final:
        save_model(trainer.model, tokenizer, f"{cfg.output_dir}/final")
    score_answers(cfg, run)
    return trainer


def score_answers(cfg: RunConfig, run: RunLog):
    """--score-answers (default: on with a CUDA GPU): EM/F1 of the saved model, on rank 0, so the answer quality
    table is filled at the end of the lesson's run."""
    scoring = cfg.score_answers if cfg.score_answers is not None else torch.cuda.is_available()
    if scoring and not cfg.save_final:
        print("[workshop] notice: --score-answers skipped: --no-save-final saved no model to score", flush=True)
    run.update(score_answers=scoring and cfg.save_final)
    if scoring and cfg.save_final and run.enabled:
        from workshop.answer_quality import score_at_end

        score_at_end(run.dir, f"{cfg.output_dir}/final", cfg.score_limit)


def _evaluated_at(state) -> bool:
    return any("eval_loss" in event and event.get("step") == state.global_step for event in state.log_history)


def build_device(ds_config: dict | None):
    """Where to build random weights: this process's GPU, unless ZeRO-3 is to partition them (its point is that
    no GPU ever holds the whole model)."""
    if not torch.cuda.is_available() or zero_stage(ds_config) == 3:
        return None
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"


def fail(message, code=2):
    """An expected mistake: one line on stderr, no traceback, a distinct exit status."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _exit_on_sigterm(signum, frame):
    # scancel and SLURM's time limit send SIGTERM: turn it into an exception so the manifest is finished.
    raise SystemExit(128 + signum)


def main(argv=None, lesson="baseline", require_deepspeed=False, **lesson_defaults):
    STARTUP.begin()
    try:
        cfg = parse_args(argv, lesson=lesson, require_deepspeed=require_deepspeed, **lesson_defaults)
    except WorkshopError as err:
        fail(err)

    config_name = cfg.config_name or _config_name(cfg)
    run = RunLog(cfg.run_dir or default_run_dir(config_name), {
        "config_name": config_name, "lesson": cfg.lesson, "settings": vars(cfg).copy(),
        "model": resolve_model(cfg.model), "init": cfg.init, "profile": cfg.profile, "data_source": cfg.data,
        "subset_size": cfg.subset_size, "deepspeed_config": cfg.deepspeed})
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        train(cfg, run)
    except RunStopped as stop:
        run.finish(stop.status, stop.code, str(stop), **stop.fields)
        fail(stop, code=stop.code)
    except WorkshopError as err:
        run.finish("failed", 2, str(err))
        fail(err)
    except torch.OutOfMemoryError as err:
        memory = cuda_memory_now()  # the failed step's tensors are still alive: the figures at the time
        run.finish("oom", 3, str(err).splitlines()[0], oom_memory=memory)
        cap = run.manifest.get("gpu_memory_limit")
        capped = f", capped at {cap['gib']:g} GiB to emulate {cap['emulates']}" if cap else ""
        fail(f"out of GPU memory ({describe_cuda_memory(memory)}{capped}); lower --per-device-train-batch-size or "
             f"use DeepSpeed; figures in {run.dir}/manifest.json", code=3)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
        run.finish("cancelled" if code == 128 + signal.SIGTERM else "failed", code)
        raise
    except BaseException as err:
        run.finish("failed", 1, f"{type(err).__name__}: {err}")
        raise
    run.finish("completed", 0)
    print(f"[workshop] done; run folder {run.dir}", flush=True)


def _config_name(cfg: RunConfig) -> str:
    if cfg.deepspeed:
        return Path(cfg.deepspeed).stem
    return cfg.lesson


if __name__ == "__main__":
    main()
