"""BLOOM's attention through PyTorch's fused kernels (`--attention sdpa`).

transformers' `BloomAttention` computes its scores itself (`alibi.baddbmm(q, k^T)`, the mask added, an fp32
softmax, `bmm` with the values) and never consults `ALL_ATTENTION_FUNCTIONS`, so `attn_implementation="sdpa"`
does not reach it: every layer materialises a batch x heads x length x length score tensor and its fp32 softmax.
`use_sdpa_attention(model)` keeps every weight and replaces only that core with
`torch.nn.functional.scaled_dot_product_attention`, given BLOOM's ALiBi bias plus the causal/padding mask as one
additive `attn_mask` in the query's dtype (on a GPU the memory-efficient kernel takes such a bias; flash does not).

Same inputs, same cache update, same output; the attention probabilities are not formed, so a call that asks
for them (`output_attentions=True`) and BLOOM's slow-but-exact tensor-parallel path use the stock code.
"""
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.models.bloom.modeling_bloom import BloomAttention, dropout_add

from workshop.errors import WorkshopError


class SdpaBloomAttention(BloomAttention):
    def forward(self, hidden_states, residual, alibi, attention_mask, layer_past=None, use_cache=False,
                output_attentions=False, **kwargs):
        if output_attentions or (self.pretraining_tp > 1 and self.slow_but_exact):
            return super().forward(hidden_states, residual, alibi, attention_mask, layer_past=layer_past,
                                   use_cache=use_cache, output_attentions=output_attentions, **kwargs)
        batch_size, q_length, _ = hidden_states.shape
        query, key, value = self._reshape(self.query_key_value(hidden_states))  # [batch, heads, length, head_dim]
        if layer_past is not None:
            key, value = layer_past.update(key, value, self.layer_idx)
        kv_length = key.shape[2]
        # alibi: [batch * heads, 1, kv_length]; the mask: [batch, 1, q_length, kv_length] of 0 / dtype-min (as in
        # the stock module, None means no mask at all). Summed in their own dtype (fp32 under autocast), then
        # clamped: fp32's minimum rounds to -inf in bf16/fp16, and a row that is all -inf is NaN.
        bias = alibi.view(batch_size, self.num_heads, 1, kv_length) * self.beta
        if attention_mask is not None:
            bias = bias + attention_mask
        bias = bias.clamp(min=torch.finfo(query.dtype).min).to(query.dtype)
        # On a CPU, PyTorch's fused kernel gets the gradients of a fully masked row (a left-padding query, whose
        # output does feed the loss: it predicts the first real token) different from the stock module; the
        # math kernel agrees with it exactly. The speed is on the GPU, where the memory-efficient kernel runs.
        with sdpa_kernel(SDPBackend.MATH) if query.device.type == "cpu" else nullcontext():
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=bias, scale=self.inv_norm_factor,
                dropout_p=self.attention_dropout.p if self.training else 0.0)
        context = context.transpose(1, 2).reshape(batch_size, q_length, self.hidden_size)
        output = dropout_add(self.dense(context), residual, self.hidden_dropout, self.training)
        return output, None


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
        module.__class__ = SdpaBloomAttention  # same parameters and state dict; only forward differs
    return len(layers)
