"""BLOOM's attention through PyTorch's fused kernels (`--attention sdpa` or `--attention flex`).

transformers' `BloomAttention` computes its scores itself (`alibi.baddbmm(q, k^T)`, the mask added, an fp32
softmax, `bmm` with the values) and never consults `ALL_ATTENTION_FUNCTIONS`, so `attn_implementation="sdpa"`
does not reach it: every layer materialises a batch x heads x length x length score tensor and its fp32 softmax.
`use_sdpa_attention(model)` keeps every weight and replaces only that core with
`torch.nn.functional.scaled_dot_product_attention`, given BLOOM's ALiBi bias plus the causal/padding mask as one
additive `attn_mask` in the query's dtype (on a GPU the memory-efficient kernel takes such a bias; flash does not).

`--attention flex` adds ALiBi inside FlexAttention's kernel instead (a `score_mod`: score + slope x key position,
read from the same alibi tensor) and skips the blocks the causal/padding mask hides (a block mask): no bias
tensor, no masked block computed. It is compiled (torch.compile) on a GPU; on a CPU the same two functions are
evaluated on the whole score tensor (FlexAttention has no CPU backward), so CI checks what the kernel computes.

Same inputs, same cache update, same output; the attention probabilities are not formed, so a call that asks
for them (`output_attentions=True`) and BLOOM's slow-but-exact tensor-parallel path use the stock code.
"""
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.models.bloom.modeling_bloom import BloomAttention, dropout_add

from workshop.errors import WorkshopError


class FusedBloomAttention(BloomAttention):
    """The stock module's projections, cache update, output projection and dropout; only the core differs."""

    def stock_only(self, layer_past, output_attentions):
        return output_attentions or (self.pretraining_tp > 1 and self.slow_but_exact)

    def forward(self, hidden_states, residual, alibi, attention_mask, layer_past=None, use_cache=False,
                output_attentions=False, **kwargs):
        if self.stock_only(layer_past, output_attentions):
            return super().forward(hidden_states, residual, alibi, attention_mask, layer_past=layer_past,
                                   use_cache=use_cache, output_attentions=output_attentions, **kwargs)
        batch_size, q_length, _ = hidden_states.shape
        query, key, value = self._reshape(self.query_key_value(hidden_states))  # [batch, heads, length, head_dim]
        if layer_past is not None:
            key, value = layer_past.update(key, value, self.layer_idx)
        # alibi: [batch * heads, 1, kv_length], slope x key position; the mask: [batch, 1, q_length, kv_length] of
        # 0 / dtype-min (as in the stock module, None means no mask at all)
        bias = alibi.view(batch_size, self.num_heads, key.shape[2]) * self.beta
        context = self.core(query, key, value, bias, attention_mask)
        context = context.transpose(1, 2).reshape(batch_size, q_length, self.hidden_size)
        output = dropout_add(self.dense(context), residual, self.hidden_dropout, self.training)
        return output, None


class SdpaBloomAttention(FusedBloomAttention):
    def core(self, query, key, value, bias, attention_mask):
        # ALiBi and the mask summed in their own dtype (fp32 under autocast), then clamped: fp32's minimum rounds to
        # -inf in bf16/fp16, and a row that is all -inf is NaN.
        bias = bias[:, :, None, :]
        if attention_mask is not None:
            bias = bias + attention_mask
        bias = bias.clamp(min=torch.finfo(query.dtype).min).to(query.dtype)
        # On a CPU, PyTorch's fused kernel gets the gradients of a fully masked row (a left-padding query, whose
        # output does feed the loss: it predicts the first real token) different from the stock module; the
        # math kernel agrees with it exactly. The speed is on the GPU, where the memory-efficient kernel runs.
        with sdpa_kernel(SDPBackend.MATH) if query.device.type == "cpu" else nullcontext():
            return F.scaled_dot_product_attention(
                query, key, value, attn_mask=bias, scale=self.inv_norm_factor,
                dropout_p=self.attention_dropout.p if self.training else 0.0)


class FlexBloomAttention(FusedBloomAttention):
    def stock_only(self, layer_past, output_attentions):
        # Decoding one token after another (a filled cache) is generation, not the training this is for.
        decoding = layer_past is not None and layer_past.get_seq_length(self.layer_idx) > 0
        return (super().stock_only(layer_past, output_attentions) or decoding
                or (self.training and self.attention_dropout.p > 0))  # FlexAttention has no dropout

    def core(self, query, key, value, bias, attention_mask):
        return flex_call(query.device)(query, key, value, bias, attention_mask, self.inv_norm_factor)


def alibi_mods(bias, attention_mask, q_length, kv_length):
    """FlexAttention's (score_mod, mask_mod) for the stock module's softmax(scale q.k + bias[key] + mask): ALiBi
    added to each score, and the mask as a predicate (None: no mask, as the stock module reads None)."""
    if attention_mask is None:
        return (lambda score, b, h, q, kv: score + bias[b, h, kv]), None
    # BLOOM's mask is causal + key padding (0 / dtype-min): the last query sees every key that is not padding.
    real_key = attention_mask[:, 0, -1, :] == 0  # [batch, kv_length]
    offset = kv_length - q_length  # the queries are the last q_length positions
    # A query that sees no key at all (left padding) gets, in the stock module, a softmax over scores that all
    # round to dtype-min: the mean of every value, future ones too. Its output predicts the first real token, so it
    # is in the loss: here such a query sees every key with one constant score, which gives the same mean.
    blind = real_key.cumsum(-1)[:, offset:] == 0  # [batch, q_length]

    def alibi(score, b, h, q, kv):
        biased = score + bias[b, h, kv]
        # 0 in the forward pass; in the backward pass the stock module's gradient, which flows into q and k as if
        # the scores under dtype-min had counted
        return torch.where(blind[b, q], biased - biased.detach(), biased)

    def visible(b, h, q, kv):
        return ((kv <= q + offset) & real_key[b, kv]) | blind[b, q]

    return alibi, visible


def flex_alibi(query, key, value, bias, attention_mask, scale):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # only this flag uses it

    batch, q_length, kv_length = query.shape[0], query.shape[2], key.shape[2]
    score_mod, mask_mod = alibi_mods(bias, attention_mask, q_length, kv_length)
    block_mask = (None if mask_mod is None else  # blocks the mask hides entirely are never computed
                  create_block_mask(mask_mod, batch, None, q_length, kv_length, device=query.device))
    return flex_attention(query, key, value, score_mod=score_mod, block_mask=block_mask, scale=scale,
                          kernel_options=KERNEL_OPTIONS)


# The forward kernel's default tiles ran 4x slower with the padding lookups of `visible` (2.10 ms against 0.51 ms,
# backward 0.37 against 0.61; batch 32 x 16 heads x 512 x 64, bf16, H100: benchmarks/flex_variants.py, results in
# docs/results/issue28_h100-2026-12-06-b/). These tiles give the smallest forward + backward.
KERNEL_OPTIONS = {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8}


def dense_alibi(query, key, value, bias, attention_mask, scale):
    """The same score_mod and mask_mod evaluated on the whole score tensor, with broadcast indices, as
    FlexAttention's reference implementation does: the CPU path (PyTorch 2.13's FlexAttention has no backward
    on a CPU), so CI trains through the functions the GPU kernel is compiled from."""
    shape = (query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    b, h, q, kv = (torch.arange(n, device=query.device).view([n if i == d else 1 for i in range(4)])
                   for d, n in enumerate(shape))
    score_mod, mask_mod = alibi_mods(bias, attention_mask, shape[2], shape[3])
    scores = score_mod((query @ key.transpose(-1, -2)).float() * scale, b, h, q, kv)
    if mask_mod is not None:
        scores = scores.masked_fill(~mask_mod(b, h, q, kv), float("-inf"))
    return scores.softmax(-1).to(value.dtype) @ value


_COMPILED = {}


def flex_call(device):
    """FlexAttention's fused kernel is what torch.compile generates: on a GPU flex_alibi (mask and attention
    together) is compiled once, unless the whole model is being compiled already (which then traces it). On a
    CPU the same mods run densely (dense_alibi)."""
    if device.type == "cpu":
        return dense_alibi
    if torch.compiler.is_compiling():
        return flex_alibi
    if "flex" not in _COMPILED:
        _COMPILED["flex"] = torch.compile(flex_alibi)
    return _COMPILED["flex"]


IMPLEMENTATIONS = {"sdpa": SdpaBloomAttention, "flex": FlexBloomAttention}


def use_attention(model, attention: str):
    """Give every BloomAttention of `model` the `attention` implementation ("eager" leaves the model as built).
    Returns the number of layers changed."""
    if attention == "eager":
        return 0
    layers = [m for m in model.modules() if isinstance(m, BloomAttention)]
    if not layers:
        raise WorkshopError(f"--attention {attention} replaces BLOOM's attention; {type(model).__name__} has none "
                            "(drop the flag)")
    for module in layers:
        module.__class__ = IMPLEMENTATIONS[attention]  # same parameters and state dict; only forward differs
    return len(layers)
