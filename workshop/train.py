"""The training every lesson runs: `train(cfg, run)`, read top to bottom, is the whole lesson.

Its command line is workshop/entry.py's main(), which every lesson's train.py calls (`python -m workshop.train`
runs it too): the flags are checked before this module's torch and transformers load.
"""
import math
import os
import socket
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from workshop.bloom_attention import use_attention
from workshop.activations import ActivationsCallback
from workshop.checkpoint_seal import SealCallback, check_trusted
from workshop.config import RunConfig, Trainer as TrainerSection
from workshop.data import collator, load_squad, pack, real_tokens, split, tokenize
from workshop.deepspeed.plan import Plan, prepare, stop_if_refused
from workshop.deepspeed.setup import cpu_deepspeed_state
from workshop.export import use_universal
from workshop.entry import fail, main  # noqa: F401 (the entry's names, where the lessons' scripts found them)
from workshop.fewer_syncs import FewerSyncsTrainer
from workshop.fsdp import WrappingCallback, fsdp_trainer, process_group, shard
from workshop.fused_loss import check_supported as check_fused_loss, use_fused_loss
from workshop import live_view
from workshop.guards import (DivergenceCallback, RunStopped, diverged_stop, disk_full_stop, is_disk_full,
                             is_lost_rank, last_whole_checkpoint, lost_rank_stop, save_final, set_aside_partial)
from workshop.model import load_model, parameter_count, tokenizer_record
from workshop.model_states import ModelStatesCallback
from workshop.profiling import ProfilerCallback
from workshop.resume import named_checkpoint, unfinished_run
from workshop.runlog import RunLog, StepsCallback
from workshop.speed import SpeedCallback, flops_per_token, matmul_parameters
from workshop.startup import STARTUP
from workshop.save_times import SaveTimesCallback
from workshop.step_times import StepTimesCallback
from workshop.windows import WindowsCallback, load_ops_outside_training


# transformers 5 renamed the Trainer's gradient_checkpointing (a deprecated alias now) to activation_checkpointing
CHECKPOINTING = next(name for name in ("activation_checkpointing", "gradient_checkpointing")
                     if name in TrainingArguments.__dataclass_fields__)


def train(cfg: RunConfig, run: RunLog):
    # DeepSpeed config, precision, GPU cap, preflight, ops (outside the measured window): a mistake fails early
    plan = prepare(cfg, load=lambda ds_config: load_ops_outside_training(run, ds_config))
    run.update(**plan.record())
    stop_if_refused(plan)
    use_universal(cfg.resume, plan.ds_config)  # a universal checkpoint resumes under any stage and process count
    # The arguments come before the model: with a ZeRO-3 config they make the model be built partitioned
    # (deepspeed.zero.Init, in from_pretrained and in workshop.model.build) for as long as they exist.
    args = training_arguments(cfg, plan)
    STARTUP.mark("arguments_ready")
    model, tokenizer = build_model(cfg, plan, run)
    STARTUP.mark("model_built")
    dataset = load_squad(cfg.subset_size, source=cfg.data)
    rows = tokenize(dataset, tokenizer, cfg.max_length, pad=cfg.padding == "max")
    train_set, eval_set = split(rows, cfg.eval_fraction, cfg.seed)
    if cfg.padding == "packed":
        train_set = pack(train_set, cfg.max_length)  # eval keeps one example a row: its loss compares across runs
    STARTUP.mark("data_ready")

    trainer_class = FewerSyncsTrainer if cfg.fewer_syncs else Trainer
    if cfg.fsdp:
        trainer_class = fsdp_trainer(trainer_class)
    with live_view.logging_into(run.dir):  # the Trainer's TensorBoard events into the run folder
        trainer = trainer_class(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                                data_collator=collator(tokenizer, cfg.padding), processing_class=tokenizer,
                                callbacks=[run.callback(), StepsCallback(run), STARTUP.callback(run), SealCallback(),
                                           StepTimesCallback(run.dir / "steps.jsonl", run.enabled),
                                           WindowsCallback(run)])
    if cfg.torch_compile:
        drop_last_train_batch(trainer)
    STARTUP.mark("trainer_built")
    guard = add_callbacks(trainer, cfg, run)
    print(f"[workshop] training {cfg.model} ({run.manifest['parameters'] / 1e6:.1f} M parameters) on "
          f"{len(train_set)} examples, evaluating on {len(eval_set)}; logs in {run.dir}", flush=True)

    resume = resume_point(cfg, run)
    print(f"[workshop] rank {os.environ.get('RANK', '0')} of {os.environ.get('WORLD_SIZE', '1')} on "
          f"{socket.gethostname()}", flush=True)
    guard.trainer = trainer  # its DeepSpeed engine (fp16 loss scale) exists only once train() has begun
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except Exception as err:
        if isinstance(err, RunStopped):  # the run folder's own disk is full (workshop/run_files.py)
            raise
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
    after_training(trainer, result, cfg, run)
    if cfg.save_final:
        save_final(trainer, tokenizer, cfg.output_dir, run.enabled)
    score_answers(cfg, run)
    return trainer


def training_arguments(cfg: RunConfig, plan: Plan) -> TrainingArguments:
    """The Trainer's arguments: the config's trainer section as it is (its fields are TrainingArguments' own
    names), with the plan's precision and DeepSpeed config and what the workshop always wants."""
    return TrainingArguments(
        **cfg.section(TrainerSection),
        fp16=plan.fp16,
        bf16=plan.bf16,
        # the Trainer refuses bf16 without a GPU unless told it is a CPU run; FSDP2 on CPUs runs over gloo
        use_cpu=(plan.bf16 or bool(cfg.fsdp)) and not plan.cuda,
        **{CHECKPOINTING: cfg.gradient_checkpointing},
        torch_compile=cfg.torch_compile,
        **({"optim": cfg.optim} if cfg.optim else {}),
        include_num_input_tokens_seen="non_padding",  # real tokens, for workshop.speed
        logging_nan_inf_filter=False,  # a NaN/inf loss must show (the Trainer would log the earlier mean instead)
        ddp_timeout=cfg.dist_timeout,
        deepspeed=plan.ds_config,
        push_to_hub=False,
        report_to=live_view.report_to(),  # `tensorboard --logdir logs/`: the live view (workshop/live_view.py)
        **cpu_deepspeed_state(plan.ds_config, cfg.dist_timeout),
        **process_group(cfg, plan.cuda),
    )


def build_model(cfg: RunConfig, plan: Plan, run: RunLog):
    """The model (random weights where the plan says), its attention and loss as the speed flags ask."""
    model, tokenizer = load_model(cfg.model, init=cfg.init, seed=cfg.seed, device=plan.weights_device)
    partitioned = sum(hasattr(p, "ds_id") for p in model.parameters())
    if partitioned:
        print(f"[workshop] ZeRO-3: model created partitioned (deepspeed.zero.Init): {partitioned} parameter "
              "tensors, none whole in this process", flush=True)
    if cfg.fsdp:
        shard(model, cfg.fsdp, plan.bf16, plan.fp16, cfg.fsdp_wrap_class)
    run.update(created_partitioned=partitioned, tokenizer=tokenizer_record(tokenizer, model),
               attention_layers_replaced=use_attention(model, cfg.attention))
    if cfg.fused_loss or cfg.chunked_loss:
        check_fused_loss(plan.ds_config)
        use_fused_loss(model, on_gpu=plan.cuda, chunked=cfg.chunked_loss)
    if cfg.peft != "none":  # lesson 6: the base frozen, LoRA adapters trained (workshop/peft_model.py)
        from workshop.peft_model import apply_peft

        model, record = apply_peft(model, cfg, plan.cuda)
        run.update(peft=record)
    return model, tokenizer


def add_callbacks(trainer, cfg: RunConfig, run: RunLog) -> DivergenceCallback:
    """Speed, divergence and (--torch-profiler) profiling callbacks, and the run's sizes into the manifest."""
    model, train_set = trainer.model, trainer.train_dataset
    mean_length = real_tokens(train_set) / len(train_set)
    trainer.add_callback(SpeedCallback(run, flops_per_token(model.config, matmul_parameters(model), mean_length)))
    steps_per_epoch = math.ceil(len(trainer.get_train_dataloader()) / cfg.gradient_accumulation_steps)
    guard = DivergenceCallback(cfg.diverge_patience)
    trainer.add_callback(guard)
    trainer.add_callback(ModelStatesCallback(run, trainer))
    trainer.add_callback(WrappingCallback(run, trainer, cfg.fsdp))
    trainer.add_callback(ActivationsCallback(run, model))
    if "tensorboard" in trainer.args.report_to:  # after the Trainer's own TensorBoard callback, which it adds first
        trainer.add_callback(live_view.MemorySeries(run.dir, trainer))
    if cfg.torch_profiler:
        trainer.add_callback(ProfilerCallback(run.dir, enabled=run.enabled))
    trainer.add_callback(SaveTimesCallback(run))  # last: the others' logging is no part of a save's time
    run.update(train_samples=len(train_set), eval_samples=len(trainer.eval_dataset),
               parameters=parameter_count(model), padding=cfg.padding, mean_train_row_tokens=round(mean_length, 1),
               steps_per_epoch=steps_per_epoch, steps_planned=math.ceil(steps_per_epoch * cfg.num_train_epochs),
               steps_done=0)
    return guard


def resume_point(cfg: RunConfig, run: RunLog) -> str | None:
    """[failures] The checkpoint training goes on from (workshop/resume.py says which), or None for step 0.
    A fresh run never picks up another run's checkpoints from a shared --output-dir, and never one a full disk or a
    kill left half-written: only one with its trainer_state.json."""
    earlier = run.manifest["attempts"] and Path(cfg.output_dir).is_dir()
    if earlier and run.enabled and (partial := set_aside_partial(cfg.output_dir)):
        print(f"[workshop] removed half-written {', '.join(partial)} (an earlier attempt's write failed)", flush=True)
    if cfg.resume == "never":
        return None
    if cfg.resume != "auto":
        resume, why = named_checkpoint(cfg.resume), "--resume"
    elif earlier:
        resume, why = last_whole_checkpoint(cfg.output_dir), f"attempt {len(run.manifest['attempts'])}"
    else:
        resume, source = unfinished_run(cfg, run.dir)
        why = f"the unfinished run {source} of the same config; --resume never starts from step 0"
    if resume:
        check_trusted(resume)  # resuming unpickles it
        print(f"[workshop] resuming from {resume} ({why})", flush=True)
        run.update(resumed_from=resume)
    return resume


def after_training(trainer, result, cfg: RunConfig, run: RunLog):
    """Say when --max-steps cut the lesson short, print this rank's loss, and end with an eval loss."""
    if trainer.state.global_step < run.manifest["steps_planned"]:
        print(f"[workshop] stopped by --max-steps: {trainer.state.global_step:,} of the lesson's "
              f"{run.manifest['steps_planned']:,} steps; runtimes in this run folder are not the lesson's total",
              flush=True)
    # every rank prints the loss it saw: they must agree (the Trainer averages it over the ranks)
    print(f"[workshop] rank {os.environ.get('RANK', '0')} on {socket.gethostname()}: "
          f"train_loss {result.training_loss:.6f}", flush=True)
    if cfg.eval_strategy != "no" and not _evaluated_at(trainer.state):
        trainer.evaluate()  # a --max-steps run that stops mid-epoch still ends with an eval loss


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


if __name__ == "__main__":
    main()
