"""How far BLOOM's attention core drifts from an fp64 reference in bf16: sdpa with ALiBi added to the scores in
bf16, against the dense path that keeps the bias in fp32 (what flex attention's score_mod does). CPU or GPU.

BLOOM's ALiBi bias grows with the key's absolute position (slope x position, up to 0.71 x 511 = 361 at 512
tokens), where bf16's step is 2 above 256: the bias itself is rounded before the softmax sees it. 2026-12-06
(CPU, batch 2, 16 heads, 512 tokens, causal mask): sdpa 1.31 off at most, the fp32-bias path 0.019; this prints
those figures.

    python3 benchmarks/alibi_bf16_error.py [--batch 2] [--length 512] [--device cpu]
"""
import argparse
from types import SimpleNamespace

import torch

from workshop.bloom_attention import SdpaBloomAttention, dense_alibi


def errors(batch, length, device, heads=16, head_dim=64):
    """(largest bias, sdpa's max abs error, the fp32-bias path's max abs error), both cores fed bf16 q, k, v."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, heads, length, head_dim, device=device) for _ in range(3))
    slopes = 2.0 ** (-8.0 * torch.arange(1, heads + 1, device=device) / heads)  # BLOOM's, for 16 heads
    bias = (slopes[None, :, None] * torch.arange(length, device=device)[None, None, :]).expand(batch, -1, -1)
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    mask = torch.zeros(batch, 1, length, length, device=device).masked_fill(~causal, torch.finfo(torch.float32).min)
    scale = head_dim ** -0.5
    reference = dense_alibi(q.double(), k.double(), v.double(), bias.double(), mask.double(), scale)
    module = SimpleNamespace(inv_norm_factor=scale, attention_dropout=torch.nn.Dropout(0.0), training=False)
    half = [t.bfloat16() for t in (q, k, v)]
    sdpa = SdpaBloomAttention.core(module, *half, bias.contiguous(), mask).double()
    fp32_bias = dense_alibi(*half, bias, mask, scale).double()
    return bias.max().item(), (sdpa - reference).abs().max().item(), (fp32_bias - reference).abs().max().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    largest, sdpa, fp32_bias = errors(args.batch, args.length, args.device)
    print(f"batch {args.batch} x 16 heads x {args.length} tokens on {args.device}, largest ALiBi bias {largest:.1f}")
    print(f"sdpa, bias added in bf16:    max abs error {sdpa:.3g} against fp64")
    print(f"dense, bias kept in fp32:    max abs error {fp32_bias:.3g} against fp64")


if __name__ == "__main__":
    main()
