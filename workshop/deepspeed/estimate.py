"""How much memory the model states (weights, gradients, Adam) need per ZeRO stage and offload choice.

    python -m workshop.estimate --model bloom-560m --gpus 1 2 4 [--format markdown|csv|json]
    python -m workshop.estimate --model llama      # any name --model takes: a family, a Hub id, a local folder

ZeRO-2 and ZeRO-3 rows are DeepSpeed's own estimates (the functions behind its
estimate_zero{2,3}_model_states_mem_needs_all_cold printouts), computed from parameter counts, which are counted
as DeepSpeed's estimators count a live model, on the model built on PyTorch's meta device from its config (shapes
only: no memory, no weights downloaded). DeepSpeed has no estimator for stages 0 and 1; those rows use the
same accounting as its ZeRO-2 estimate: 2 bytes/param of fp16 weights plus 18 bytes/param of
fp16 gradients (2), fp32 gradients (4), fp32 master weights (4) and Adam moments (8), of which
ZeRO-1 splits the fp32 part (16) across GPUs. The ZenFlow row (stage2_zenflow) is DeepSpeed's ZeRO-2 offload
estimate plus ZenFlow's own buffers, counted from its source (ZENFLOW_HOST_BYTES below). Activations, buffers and
the CUDA context come on top.
"""

import argparse
import json
import os
from importlib.metadata import version
from pathlib import Path

import functools

import pandas as pd
import torch

from workshop.deepspeed.config import quiet_deepspeed
from workshop.errors import WorkshopError
from workshop.shapes import BLOOM_SHAPES, BLOOM_VOCAB

GIB = 2**30
ROWS_VERSION = 2  # part of the on-disk cache's name: a cache written before the ZenFlow row is not read
TINY_CONFIG = Path(__file__).parents[1] / "assets" / "bloom-tiny" / "config.json"
MODELS = [*BLOOM_SHAPES, "bloom-tiny"]


def bloom_shape(model) -> dict:
    """The BloomConfig fields that decide the parameter count."""
    if model == "bloom-tiny":
        tiny = json.loads(TINY_CONFIG.read_text()) if TINY_CONFIG.exists() else {}
        return {"vocab_size": tiny.get("vocab_size", BLOOM_VOCAB), "hidden_size": tiny.get("hidden_size", 64),
                "n_layer": tiny.get("n_layer", 2), "n_head": tiny.get("n_head", 4)}
    if model not in BLOOM_SHAPES:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    return {"vocab_size": BLOOM_VOCAB, **BLOOM_SHAPES[model]}


def bloom_params(shape) -> tuple:
    """(total parameters, parameters of the largest layer) of a BLOOM causal LM.

    Per block: LayerNorm 2h, fused QKV 3h*h + 3h, attention output h*h + h, LayerNorm 2h,
    MLP h*4h + 4h and 4h*h + h, i.e. 12h^2 + 13h. Around them the word embeddings (v*h, shared with
    the LM head), the embedding LayerNorm and the final LayerNorm (2h each). The largest layer,
    which ZeRO-3 must gather whole, is the embedding.
    """
    v, h, n = shape["vocab_size"], shape["hidden_size"], shape["n_layer"]
    return v * h + 4 * h + n * (12 * h * h + 13 * h), v * h


@functools.lru_cache(maxsize=None)
def param_counts(model, local_only=False) -> tuple:
    """(total parameters, parameters of the largest layer) of any model name workshop.model resolves: the model
    built on the meta device from its config. The largest layer is the module with the most parameters of its
    own, as DeepSpeed's ZeRO-3 estimator counts it (ZeRO-3 gathers it whole): the embedding, for every family
    here. Tied input and output embeddings count once. For BLOOM this is bloom_params, the closed form."""
    from workshop.model import MODEL_FOR_CAUSAL_LM_MAPPING, model_config, resolve_model

    config = model_config(resolve_model(model), local_only=local_only)
    with torch.device("meta"):
        net = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)](config)
    total = sum(p.numel() for p in net.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in net.modules())
    return total, largest


def _formula_rows(total, gpus):
    """ZeRO 0 and 1 by the accounting above; CPU side as DeepSpeed's ZeRO-2 estimate assumes it."""
    fp16 = 2 * total
    load_cpu = 4 * total * gpus * 1.5  # each process loads the fp32 model; 1.5 = DeepSpeed's buffer factor
    offload_cpu = total * max(4 * gpus, 16) * 1.5
    return [
        (0, "none", "", "stage0", fp16 + 18 * total, load_cpu),
        (1, "none", "", "stage1", 2 * fp16 + 16 * total / gpus, load_cpu),
        (1, "optimizer", "", "stage1_offload", 2 * fp16, offload_cpu),
    ]


# ZenFlow (stage2_zenflow.json) has no estimator in DeepSpeed 0.19.8; what it adds to classic ZeRO-2 offload, counted
# from deepspeed/runtime/zenflow/ (overlap_step): on the host a second fp32 gradient buffer (4 bytes/param, the
# double buffer its overlapped CPU step reads while the GPU fills the other), a stale fp32 copy of the weights (4)
# and a second pair of Adam moments in its optimizer process (8); on the GPU the fp32 weights, gradients and Adam
# moments (16) of the top-k columns it updates there, topk_ratio of the model.
ZENFLOW_HOST_BYTES = 16
ZENFLOW_TOPK_RATIO = 0.05  # stage2_zenflow.json's topk_ratio


def _zenflow_rows(total, gpus):
    """ZeRO-2 + ZenFlow: DeepSpeed's classic offload estimate plus ZenFlow's own buffers."""
    with quiet_deepspeed():
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    cpu, gpu = estimate_zero2_model_states_mem_needs(total, num_gpus_per_node=gpus, cpu_offload=True)
    return [(2, "optimizer+zenflow", "", "stage2_zenflow", gpu + 16 * ZENFLOW_TOPK_RATIO * total / gpus,
             cpu + ZENFLOW_HOST_BYTES * total)]


def _deepspeed_rows(total, largest, gpus):
    with quiet_deepspeed():
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    rows = []
    for offload, configs in ((False, "stage2"), (True, "stage2_offload, stage2_offload_nopin")):
        cpu, gpu = estimate_zero2_model_states_mem_needs(total, num_gpus_per_node=gpus, cpu_offload=offload)
        rows.append((2, "optimizer" if offload else "none", "", configs, gpu, cpu))
    zero3 = (  # (offload optimizer, offload params, what the column says, our config files)
        (False, False, "none", "stage3"),
        (True, False, "optimizer", ""),
        (True, True, "optimizer+params", "stage3_offload, stage3_offload_nopin"),
    )
    for optimizer, params, offload, configs in zero3:
        # zero_init: the model is created partitioned (deepspeed.zero.Init, what the Trainer does for
        # ZeRO-3) instead of whole in every process first.
        for zero_init in (True, False):
            cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
                total, largest, num_gpus_per_node=gpus, cpu_offload=optimizer,
                cpu_offload_params=params, zero_init=zero_init)
            rows.append((3, offload, "yes" if zero_init else "no", configs, gpu, cpu))
    return rows


def estimate_table(model="bloom-560m", gpus=(1,), deepspeed=True, local_only=False) -> pd.DataFrame:
    """One row per (GPU count, ZeRO stage, offload choice); memory in GiB (DeepSpeed's "GB").
    deepspeed=False: the formula's rows (ZeRO 0 and 1) alone, without importing DeepSpeed (seconds that a run
    without ZeRO 2-3 need not pay before its first step)."""
    total, largest = param_counts(model, local_only)
    rows = []
    for n in [gpus] if isinstance(gpus, int) else gpus:
        sources = [("formula", _formula_rows(total, n))]
        if deepspeed:
            sources += [("deepspeed", _deepspeed_rows(total, largest, n)),
                        ("deepspeed+zenflow", _zenflow_rows(total, n))]
        for source, found in sources:
            for stage, offload, zero_init, configs, gpu, cpu in found:
                rows.append({"model": model, "params_m": total / 1e6, "largest_layer_m": largest / 1e6,
                             "gpus": n, "stage": stage, "offload": offload, "zero_init": zero_init,
                             "configs": configs, "gpu_gib_per_gpu": gpu / GIB, "cpu_gib_per_node": cpu / GIB,
                             "source": source})
    return pd.DataFrame(rows)


def cached_estimate_table(model="bloom-560m", gpus=(1,), local_only=True) -> pd.DataFrame:
    """estimate_table, kept on disk per model, GPU counts and DeepSpeed version: importing DeepSpeed to compute
    it takes seconds, which fill_tables would otherwise pay on every call. A model outside the shape tables is read
    from the Hugging Face cache alone (local_only): reporting never reaches for the network."""
    counts = [gpus] if isinstance(gpus, int) else list(gpus)
    cache_root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "workshop" / "estimates"
    path = cache_root / (f"{model.replace('/', '--')}-gpus{'_'.join(map(str, counts))}-deepspeed{version('deepspeed')}"
                         f"-rows{ROWS_VERSION}.json")
    try:
        return pd.read_json(path, orient="records")
    except (OSError, ValueError):
        table = estimate_table(model, counts, local_only=local_only)
        try:
            cache_root.mkdir(parents=True, exist_ok=True)
            table.to_json(path, orient="records")
        except OSError:  # a read-only home: just no cache
            pass
        return table


def main(argv=None):
    parser = argparse.ArgumentParser(description="Model-state memory per ZeRO stage (DeepSpeed's estimators).")
    parser.add_argument("--model", default="bloom-560m",
                        help=f"{', '.join(MODELS)}, a family (llama, ...), a Hub id or a local folder")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1], help="GPUs on the node (one node)")
    parser.add_argument("--format", default="markdown", choices=["markdown", "csv", "json"])
    parser.add_argument("--peft", choices=["lora", "qlora"], help="also full fine-tuning vs LoRA vs QLoRA on one GPU "
                        "and the largest BLOOM each fits on a 40 and an 80 GB card (workshop/peft_estimate.py)")
    parser.add_argument("--lora-r", type=int, default=16, help="the adapters' rank (default: 16)")
    args = parser.parse_args(argv)
    if args.peft:
        peft_main(args)
        return

    try:
        table = estimate_table(args.model, args.gpus)
    except WorkshopError as err:
        parser.exit(2, f"error: {err}\n")
    if args.format == "markdown":
        first = table.iloc[0]
        print(f"{args.model}: {first.params_m:.1f} M parameters, largest layer {first.largest_layer_m:.1f} M "
              "(the embedding); model states only, in GiB\n")
        print(table.drop(columns=["model", "params_m", "largest_layer_m"]).to_markdown(index=False, floatfmt=".2f"))
    elif args.format == "csv":
        print(table.to_csv(index=False, float_format="%.4f"), end="")
    else:
        print(table.to_json(orient="records", indent=1))


def peft_main(args):
    """--peft: the methods side by side, in GiB, as preflight counts them (model states + the lesson's activations)."""
    from workshop.peft_estimate import method_table

    if args.lora_r < 1:
        raise SystemExit(f"error: --lora-r must be at least 1 (got {args.lora_r})")
    table = pd.DataFrame(method_table(args.model, args.lora_r))
    if args.format == "markdown":
        print(f"{args.model} on one GPU, DeepSpeed ZeRO 0 in bf16, LoRA rank {args.lora_r} on every linear layer: "
              "model states + activations of micro-batch 4 x 512 tokens + CUDA context, GiB\n")
        print(table.to_markdown(index=False, floatfmt=".2f"))
    else:
        print(table.to_csv(index=False, float_format="%.4f") if args.format == "csv" else
              table.to_json(orient="records", indent=1), end="")


if __name__ == "__main__":
    main()
