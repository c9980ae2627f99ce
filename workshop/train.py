"""The one training entry every lesson uses: `python -m workshop.train [flags]` (see --help).

Read `train()` top to bottom: it is the whole lesson. `main()` wraps it with the run folder and with
error handling that always records how the run ended.
"""
import math
import os
import signal
import socket
import sys
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from workshop.bloom_attention import use_attention
from workshop.checkpoint_seal import SealCallback, check_trusted
from workshop.config import RunConfig, parse_args, precision_name, resolve_precision
from workshop.errors import WorkshopError
from workshop.fewer_syncs import FewerSyncsTrainer
from workshop.data import collator, load_squad, pack, real_tokens, split, tokenize
from workshop.deepspeed_setup import (build_device, cap_gpu_memory, cpu_deepspeed_state, load_deepspeed_config,
                                      load_ops)
from workshop.ds_config import check_gpu_precision, match_precision, zero_stage
from workshop.guards import (DivergenceCallback, RunStopped, diverged_stop, disk_full_stop, is_disk_full,
                             is_lost_rank, last_whole_checkpoint, lost_rank_stop, set_aside_partial)
from workshop.fused_loss import check_supported as check_fused_loss, use_fused_loss
from workshop.model import load_model, parameter_count, resolve_model, save_model, tokenizer_record
from workshop.preflight import preflight
from workshop.profiling import ProfilerCallback
from workshop.runlog import (RunLog, StepsCallback, cuda_memory_now, default_run_dir, describe_cuda_memory,
                             fragmentation_hint)
from workshop.speed import SpeedCallback, flops_per_token, matmul_parameters
from workshop.startup import STARTUP


# transformers 5 renamed the Trainer's gradient_checkpointing (a deprecated alias now) to activation_checkpointing
CHECKPOINTING = next(name for name in ("activation_checkpointing", "gradient_checkpointing")
                     if name in TrainingArguments.__dataclass_fields__)


def drop_last_train_batch(trainer):
    """Under torch.compile an epoch's smaller last batch is a new shape, and the model compiles again (80 s for
    bloom-560m on an H200, in the middle of the timed steps): training drops that batch, as a hand-written loop's
    DataLoader(drop_last=True) would, so every step has one shape. Evaluation still sees every example."""
    rows, batch = len(trainer.train_dataset), trainer.args.per_device_train_batch_size
    if rows % batch == 0 or rows < batch:  # nothing to drop, or no full batch to keep
        return
    print(f"[workshop] --torch-compile: each epoch drops its last {rows % batch} row(s), a smaller batch "
          "that would compile the model again", flush=True)
    make = trainer.get_train_dataloader

    def get_train_dataloader():
        kept, trainer.args.dataloader_drop_last = trainer.args.dataloader_drop_last, True  # the eval loaders keep it
        try:
            return make()
        finally:
            trainer.args.dataloader_drop_last = kept

    trainer.get_train_dataloader = get_train_dataloader


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
        warmup_steps=cfg.warmup_steps,
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
        **cpu_deepspeed_state(ds_config, cfg.dist_timeout),
    )


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
    if cfg.fused_loss or cfg.chunked_loss:
        check_fused_loss(ds_config)
        use_fused_loss(model, on_gpu=torch.cuda.is_available(), chunked=cfg.chunked_loss)
    dataset = load_squad(cfg.subset_size, source=cfg.data)
    rows = tokenize(dataset, tokenizer, cfg.max_length, pad=cfg.padding == "max")
    train_set, eval_set = split(rows, cfg.eval_fraction, cfg.seed)
    if cfg.padding == "packed":
        train_set = pack(train_set, cfg.max_length)  # eval keeps one example a row: its loss compares across runs
    STARTUP.mark("data_ready")

    trainer_class = FewerSyncsTrainer if cfg.fewer_syncs else Trainer
    trainer = trainer_class(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                            data_collator=collator(tokenizer, cfg.padding), processing_class=tokenizer,
                            callbacks=[run.callback(), StepsCallback(run), STARTUP.callback(run), SealCallback()])
    if cfg.torch_compile:
        drop_last_train_batch(trainer)
    STARTUP.mark("trainer_built")
    parameters = parameter_count(model)
    mean_length = real_tokens(train_set) / len(train_set)
    trainer.add_callback(SpeedCallback(run, flops_per_token(model.config, matmul_parameters(model), mean_length)))
    steps_per_epoch = math.ceil(len(trainer.get_train_dataloader()) / cfg.gradient_accumulation_steps)
    guard = DivergenceCallback(cfg.diverge_patience)
    trainer.add_callback(guard)
    if cfg.torch_profiler:
        trainer.add_callback(ProfilerCallback(run.dir, enabled=run.enabled))
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
        check_trusted(resume)  # resuming unpickles it
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
        hint = fragmentation_hint(memory, cap["gib"] * 1024 if cap else None,
                                  os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""))
        fail(f"out of GPU memory ({describe_cuda_memory(memory)}{capped}{hint}); lower --per-device-train-batch-size "
             f"or use DeepSpeed; figures in {run.dir}/manifest.json", code=3)
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
