"""A plain PyTorch training loop, the yardstick for the make-it-fast lesson (benchmarks/make_it_fast.toml).

    python benchmarks/reference_loop.py --model 560m --init random --data embedded --padding packed \
        --per-device-train-batch-size 16 --gradient-accumulation-steps 1 --bf16 --optim adamw_torch_fused \
        --torch-compile --max-steps 40 --run-dir runs/reference

No Trainer: the lesson's BloomForCausalLM, data, tokenisation, packing and collator (workshop.*), then
autocast (bf16, or fp16 with a gradient scaler) on a GPU, AdamW (fused with `--optim adamw_torch_fused` on a
GPU), the Trainer's defaults that change the maths (weight decay off for biases and LayerNorms, gradient
clipping at 1.0, linear learning-rate decay after `--warmup-steps`), and `torch.compile(model)` with
`--torch-compile`, and the loss of `--chunked-loss` or `--fused-loss` (workshop.fused_loss). It takes the same
flags as `python -m workshop.train` (those it has no use for are ignored)
and writes the same run folder: the speed figures come from workshop.speed's own SpeedCallback and the log
from workshop.runlog, driven at the points the Trainer would call them, so the rows compare like for like.
"""
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader
from transformers import TrainerControl, TrainerState, get_linear_schedule_with_warmup

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workshop.bloom_attention import use_attention  # noqa: E402
from workshop.config import WorkshopError, parse_args, resolve_precision  # noqa: E402
from workshop.deepspeed.config import check_gpu_precision  # noqa: E402
from workshop.data import collator, load_squad, pack, real_tokens, split, tokenize  # noqa: E402
from workshop.fused_loss import use_fused_loss  # noqa: E402
from workshop.model import load_model, parameter_count  # noqa: E402
from workshop.runlog import RunLog, default_run_dir  # noqa: E402
from workshop.speed import SpeedCallback, flops_per_token  # noqa: E402
from workshop.train import fail  # noqa: E402


def optimizer_for(model, cfg, fused: bool):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=fused)


def train(cfg, run: RunLog):
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    check_gpu_precision(cfg, None, cuda)  # --bf16 without a GPU: one line, as workshop.train says it
    fp16, bf16 = resolve_precision(cfg, cuda, cuda and torch.cuda.is_bf16_supported())
    model, tokenizer = load_model(cfg.model, init=cfg.init, seed=cfg.seed, device="cuda" if cuda else None)
    model.to(device).train()
    use_attention(model, cfg.attention)
    if cfg.fused_loss or cfg.chunked_loss:  # the Trainer's rows with these flags compare with the same loss here
        use_fused_loss(model, on_gpu=cuda, chunked=cfg.chunked_loss)
    rows = tokenize(load_squad(cfg.subset_size, source=cfg.data), tokenizer, cfg.max_length,
                    pad=cfg.padding == "max")
    train_set, eval_set = split(rows, cfg.eval_fraction, cfg.seed)
    if cfg.padding == "packed":
        train_set = pack(train_set, cfg.max_length)
    collate = collator(tokenizer, cfg.padding)
    batch = cfg.per_device_train_batch_size  # compiled: a smaller last batch would compile again (as in train.py)
    loader = DataLoader(train_set, batch_size=batch, shuffle=True, collate_fn=collate, pin_memory=cuda,
                        generator=torch.Generator().manual_seed(cfg.seed),
                        drop_last=cfg.torch_compile and len(train_set) >= batch)
    accumulation = cfg.gradient_accumulation_steps
    steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(len(loader) / accumulation * cfg.num_train_epochs)
    optimizer = optimizer_for(model, cfg, fused=cuda and cfg.optim == "adamw_torch_fused")
    schedule = get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, steps)  # the Trainer's default
    scaler = torch.amp.GradScaler(enabled=fp16)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16 if bf16 else torch.float16, enabled=fp16 or bf16)
    step_model = torch.compile(model) if cfg.torch_compile else model

    parameters = parameter_count(model)
    speed = SpeedCallback(run, flops_per_token(model.config, parameters, real_tokens(train_set) / len(train_set)))
    callbacks = [run.callback(), speed]
    args = SimpleNamespace(per_device_train_batch_size=cfg.per_device_train_batch_size,
                           gradient_accumulation_steps=accumulation, world_size=1)
    state, control = TrainerState(max_steps=steps, num_input_tokens_seen=0), TrainerControl()
    run.update(train_samples=len(train_set), eval_samples=len(eval_set), parameters=parameters,
               padding=cfg.padding, steps_planned=steps, runner="reference loop (plain PyTorch, no Trainer)")
    print(f"[reference] {cfg.model}: {steps} steps of {cfg.per_device_train_batch_size} x {accumulation} rows; "
          f"bf16 {bf16}, fp16 {fp16}, compiled {cfg.torch_compile}, fused AdamW {optimizer.defaults['fused']}",
          flush=True)

    batches = iter(loader)
    while state.global_step < steps:
        speed.on_step_begin(args, state, control)
        for _ in range(accumulation):
            batch = next(batches, None)
            if batch is None:  # a new epoch
                batches = iter(loader)
                batch = next(batches)
            state.num_input_tokens_seen += int(batch["attention_mask"].sum())  # on the host: no GPU sync
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                loss = step_model(**batch).loss / accumulation
            scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        state.global_step += 1
        state.epoch = state.global_step * accumulation / len(loader)
        if state.global_step % cfg.logging_steps == 0:  # the only host sync, as in the Trainer's loss logging
            for callback in callbacks:
                callback.on_log(args, state, control, logs={"loss": loss.item() * accumulation})
    if cfg.eval_strategy != "no":
        logs = {"eval_loss": evaluate(step_model, eval_set, collate, cfg, device, autocast)}
        for callback in callbacks:
            callback.on_log(args, state, control, logs=logs)
    speed.on_train_end(args, state, control)
    run.update(steps_done=state.global_step)


@torch.no_grad()
def evaluate(model, eval_set, collate, cfg, device, autocast) -> float:
    """The Trainer's eval_loss: the mean over examples of their batch's mean loss."""
    model.eval()
    total, count = 0.0, 0
    for batch in DataLoader(eval_set, batch_size=cfg.per_device_eval_batch_size, collate_fn=collate):
        with autocast:
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        total, count = total + loss.item() * len(batch["input_ids"]), count + len(batch["input_ids"])
    model.train()
    return total / count


def main(argv=None):
    try:
        cfg = parse_args(argv, lesson="make_it_fast")
    except WorkshopError as err:
        fail(err)
    run = RunLog(cfg.run_dir or default_run_dir("reference_loop"),
                 {"config_name": "reference_loop", "lesson": cfg.lesson, "settings": vars(cfg).copy(),
                  "model": cfg.model, "init": cfg.init, "profile": cfg.profile, "data_source": cfg.data})
    try:
        train(cfg, run)
    except WorkshopError as err:
        run.finish("failed", 2, str(err))
        fail(err)
    except BaseException as err:
        run.finish("failed", 1, f"{type(err).__name__}: {err}")
        raise
    run.finish("completed", 0)
    print(f"[reference] done; run folder {run.dir}", flush=True)


if __name__ == "__main__":
    main()
