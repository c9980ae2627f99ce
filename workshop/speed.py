"""How fast a run trains: start-up time, time per step, real tokens/s and model-FLOPs utilisation (MFU).

The Trainer's own samples/s averages over the whole run, start-up and evaluation included; these figures come
from the steady part of training only, so configurations can be compared fairly (notebooks/04, benchmarks/).

MFU = real tokens/s x model FLOPs per token / the GPU's dense 16-bit peak, with (PaLM, appendix B)
    FLOPs per token = 6 N + 12 L d T
N the parameters that multiply each token (`matmul_parameters`: all of them but an input embedding table, which is
a lookup; BLOOM, Qwen2, OPT, Falcon and Gemma tie it to the output projection, which does multiply, so there it
counts once; LLaMA, Mistral and GPT-NeoX have a separate one; OPT's learned positions are a lookup too), so GQA's
narrower key/value projections and each family's MLP width enter through N. L layers, d the attention width (query
heads x head dim: the hidden size, except Gemma's 4 x 256 = 1024 of 1152), T the mean sequence length seen, or a
layer's sliding window where that is shorter (Gemma 3's 512, Mistral's 4096). All read from the model's config.
Real tokens are the ones the attention mask keeps: padding does work but is not counted, so padding to 512 shows
up as low MFU. Recomputation (gradient checkpointing) is not counted either: it is work the model did not need.
"""
import time

import torch
from transformers import TrainerCallback

from workshop.startup import process_start

# Dense bf16/fp16 tensor-core peaks in FLOP/s, from the vendors' data sheets (without sparsity).
PEAK_FLOPS = {
    "H100 PCIe": 756e12,
    "H100": 989.4e12,   # SXM5 / HBM3
    "H200": 989.4e12,
    "A100": 312e12,
    "L40S": 362.05e12,
}


def peak_flops(device_name: str):
    """The data-sheet peak for a CUDA device name (longest matching key), None if unknown."""
    matches = [key for key in PEAK_FLOPS if all(word in device_name for word in key.split())]
    return PEAK_FLOPS[max(matches, key=len)] if matches else None


def flops_per_token(config, parameters: int, seq_len: float) -> float:
    """6 N + 12 L d T (see above), `parameters` = matmul_parameters(model)."""
    heads = config.num_attention_heads
    width = heads * (getattr(config, "head_dim", None) or config.hidden_size // heads)
    window = getattr(config, "sliding_window", None)
    kinds = getattr(config, "layer_types", None) or [
        "sliding_attention" if window else "full_attention"] * config.num_hidden_layers
    spans = [min(seq_len, window) if kind == "sliding_attention" and window else seq_len for kind in kinds]
    return 6 * parameters + 12 * width * sum(spans)


def matmul_parameters(model) -> int:
    """Parameters that multiply each token: all but embedding lookups (the output projection counts, tied or not)."""
    from workshop.model import parameter_count

    output = model.get_output_embeddings()
    lookups = [module.weight for module in model.modules() if isinstance(module, torch.nn.Embedding)
               and (output is None or module.weight is not output.weight)]
    return parameter_count(model) - sum(getattr(weight, "ds_numel", weight.numel()) for weight in lookups)


class SpeedCallback(TrainerCallback):
    """Times training from the Trainer's loss logs, which synchronise with the GPU, and records `speed` in the
    run's manifest when training ends.

    `warmup_steps` optimizer steps are left out of the rates (allocator warm-up, cuDNN/compile autotuning).
    """

    def __init__(self, run, flops_per_token: float, warmup_steps: int = 5):
        self.run = run
        self.flops_per_token = flops_per_token
        self.warmup_steps = warmup_steps
        self.process_started = process_start()
        self.first_step_at = None
        self.marks = []  # (time, optimizer step, tokens seen), at each logged training loss
        self.evals = []  # (time, seconds): evaluations inside the timed window are not training time

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_step_at is None:
            self.first_step_at = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.marks.append((time.time(), state.global_step, state.num_input_tokens_seen))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.evals.append((time.time(), (metrics or {}).get("eval_runtime", 0.0)))

    def on_train_end(self, args, state, control, **kwargs):
        self.run.update(speed=self.summary(args))

    def summary(self, args) -> dict:
        speed = {"first_step_at": self.first_step_at,
                 "startup_s": _round(self.first_step_at and self.first_step_at - self.process_started),
                 "warmup_steps": self.warmup_steps, "flops_per_token": self.flops_per_token}
        steady = [mark for mark in self.marks if mark[1] >= self.warmup_steps]
        if len(steady) < 2:
            speed["why_no_rates"] = (f"fewer than two loss logs after step {self.warmup_steps}: "
                                     "run more steps or log more often (--logging-steps)")
            return speed
        (t0, step0, tokens0), (t1, step1, tokens1) = steady[0], steady[-1]
        seconds = t1 - t0 - sum(spent for at, spent in self.evals if t0 < at <= t1)
        steps = step1 - step0
        rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        tokens_per_s = (tokens1 - tokens0) / seconds
        speed.update(tokens_seen=tokens1, timed_steps=steps, step_s=_round(seconds / steps, 4),
                     rows_per_s=_round(steps * rows_per_step / seconds),
                     real_tokens_per_s=_round(tokens_per_s, 1))
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name()
            peak = peak_flops(name)
            speed.update(device=name, peak_flops=peak)
            if peak:
                speed["mfu"] = _round(tokens_per_s * self.flops_per_token / (peak * args.world_size), 4)
        return speed


def _round(value, digits=2):
    return None if value is None else round(value, digits)
