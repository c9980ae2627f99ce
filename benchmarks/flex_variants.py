"""Where FlexAttention's time goes in BLOOM's attention: one layer's core, forward and backward, on a GPU.

The 2026-12-06 profile of the make-it-fast ladder (bloom-560m, micro-batch 32 x 512 tokens, bf16, compiled) had
flex attention's forward kernel at 1.7 ms a layer against cuDNN's 0.2 ms under sdpa, while its backward was the
faster of the two. This times that core alone at the ladder's shape, for the workshop's two implementations and
for flex with parts of its score_mod and mask_mod taken away, so the part that costs is named by measurement:

    python3 benchmarks/flex_variants.py [--batch 32] [--length 512] [--repeats 30] [--json out.json]

Each variant is compiled once (as the whole-model compile traces it), warmed up, then timed `--repeats` times with
CUDA events; the table gives the median and the 95% interval of the median (workshop.report.spread).
Variants that drop a part of the mask compute something else on padded batches: they are timings, not options.
"""
import argparse
import json
import math
from types import SimpleNamespace

import torch

from workshop.bloom_attention import SdpaBloomAttention, alibi_mods
from workshop.report.spread import median_interval


def inputs(batch, length, heads=16, head_dim=64, dtype=torch.bfloat16):
    """q, k, v as BLOOM's projections give them under autocast, ALiBi as its forward builds it (fp32) and the 4D
    causal mask of packed rows (no padding: what the ladder trains on)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, heads, length, head_dim, device="cuda", dtype=dtype, requires_grad=True)
               for _ in range(3))
    slopes = 2.0 ** (-8.0 * torch.arange(1, heads + 1, device="cuda") / heads)
    bias = (slopes[None, :, None] * torch.arange(length, device="cuda")[None, None, :]).expand(batch, -1, -1)
    causal = torch.ones(length, length, device="cuda", dtype=torch.bool).tril()
    mask = torch.zeros(batch, 1, length, length, device="cuda").masked_fill(~causal, torch.finfo(torch.float32).min)
    return q, k, v, bias.contiguous(), mask


def flex(score="alibi", mask="visible", kernel_options=None):
    """flex_attention with the workshop's mods (score="alibi", mask="visible") or parts of them left out."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def core(q, k, v, bias, attention_mask):
        batch, length = q.shape[0], q.shape[2]
        alibi, visible = alibi_mods(bias, attention_mask, length, length)
        score_mod = {"alibi": alibi, "bias only": lambda s, b, h, qi, kv: s + bias[b, h, kv], "none": None}[score]
        mask_mod = {"visible": visible, "causal only": lambda b, h, qi, kv: kv <= qi}[mask]
        block_mask = create_block_mask(mask_mod, batch, None, length, length, device=q.device)
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=1 / math.sqrt(q.shape[-1]),
                              kernel_options=kernel_options)
    return torch.compile(core)


def sdpa():
    module = SimpleNamespace(inv_norm_factor=1 / 8, attention_dropout=torch.nn.Dropout(0.0), training=True)
    return lambda q, k, v, bias, mask: SdpaBloomAttention.core(module, q, k, v, bias, mask)


VARIANTS = {
    "sdpa (the workshop's, cuDNN/efficient kernel with the bias)": sdpa,
    "flex (the workshop's: ALiBi + blind-query fix, causal + padding mask)": lambda: flex(),
    "flex, score_mod without the blind-query where": lambda: flex(score="bias only"),
    "flex, mask_mod causal only (no padding lookups)": lambda: flex(mask="causal only"),
    "flex, bias only + causal only": lambda: flex(score="bias only", mask="causal only"),
    "flex, no score_mod, causal only (attention alone)": lambda: flex(score="none", mask="causal only"),
    "flex (the workshop's), BLOCK_M 64 BLOCK_N 64": lambda: flex(kernel_options={"BLOCK_M": 64, "BLOCK_N": 64}),
    "flex (the workshop's), BLOCK_M 128 BLOCK_N 64 num_warps 8": lambda: flex(
        kernel_options={"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8}),
}


def time_variant(make, args, repeats, warmup=5):
    fn = make()
    grad = torch.randn_like(args[0])
    forward, backward = [], []
    for i in range(warmup + repeats):
        for t in args[:3]:
            t.grad = None
        start, middle, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        start.record()
        out = fn(*args)
        middle.record()
        out.backward(grad)
        end.record()
        torch.cuda.synchronize()
        if i >= warmup:
            forward.append(start.elapsed_time(middle))
            backward.append(middle.elapsed_time(end))
    return forward, backward, out.detach()


def shown(values):
    value, low, high = median_interval(values)
    return f"{value:.3f} ({low:.3f}-{high:.3f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", help="write every timing here")
    args = parser.parse_args()
    tensors = inputs(args.batch, args.length)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; batch {args.batch} x 16 heads x "
          f"{args.length} tokens x 64, bf16; {args.repeats} timed calls after 5 warm-up; ms, median (95% interval)")
    print("| variant | forward ms | backward ms | max abs diff vs sdpa |\n|---|---:|---:|---:|")
    results, reference = {}, None
    for name, make in VARIANTS.items():
        try:
            forward, backward, out = time_variant(make, tensors, args.repeats)
        except Exception as err:  # a kernel option this torch rejects: say so, time the others
            print(f"| {name} | failed: {type(err).__name__}: {str(err).splitlines()[0][:120]} | | |")
            continue
        reference = out if reference is None else reference
        diff = (out.float() - reference.float()).abs().max().item()
        print(f"| {name} | {shown(forward)} | {shown(backward)} | {diff:.2e} |", flush=True)
        results[name] = {"forward_ms": forward, "backward_ms": backward, "max_abs_diff_vs_sdpa": diff}
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": args.batch,
                       "length": args.length, "results": results}, out, indent=1)


if __name__ == "__main__":
    main()
