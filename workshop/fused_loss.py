"""A causal LM's loss without its logits: a fused linear + cross-entropy (`--fused-loss`), for any family.

BLOOM predicts one of 250,880 tokens (Gemma 3 of 262,144, Qwen2 of 151,936). The stock forward computes every logit and upcasts them to fp32 for the
loss: 16 x 512 x 250,880 x 4 bytes = 7.7 GiB for one micro-batch, plus as much again for its gradient, which
caps the micro-batch. Liger's fused linear-cross-entropy kernel computes the loss chunk by chunk from the last
hidden states and the output projection, so those logits never exist at once.

`use_fused_loss(model)` replaces the model's forward for training batches (those with labels). Generation
and batches without labels use the stock forward. The last hidden states come from the family's base model
(`model.base_model`: BLOOM's `transformer`, LLaMA's `model`, GPT-NeoX's `gpt_neox`, ...) and the output
projection from `model.get_output_embeddings()` (`lm_head`, GPT-NeoX's `embed_out`), so no family's names are
assumed. Without a CUDA GPU (Liger's kernels are Triton) the same
forward computes the loss the plain way, so CI checks the plumbing against the stock model.

`--chunked-loss` is the same idea in plain PyTorch (ChunkedLinearCrossEntropy): the loss and both gradients are
computed CHUNK_TOKENS rows at a time in the forward pass, so no chunk's logits outlive it. Unlike Liger's Triton
kernel, torch.compile traces it with the rest of the model, and it runs on a CPU as it does on a GPU.
"""
import types

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import CausalLMOutput

from workshop.errors import WorkshopError
from workshop.deepspeed.config import zero_stage


def liger_loss_fn():
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError as err:
        raise WorkshopError("--fused-loss needs the liger-kernel package on a CUDA GPU: "
                            "pip install liger-kernel") from err
    return LigerFusedLinearCrossEntropyLoss(reduction="sum")


CHUNK_TOKENS = 1024  # BLOOM: 1024 x 250,880 fp32 logits = 0.98 GiB per chunk, instead of 7.7 GiB for 16 x 512


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum(cross_entropy(hidden @ weight.T, targets)) over the rows whose target is not -100, with the gradients
    of hidden and weight computed chunk by chunk in the forward pass (d loss / d logits = softmax - one-hot)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets):
        total = hidden.new_zeros((), dtype=torch.float32)
        grad_hidden = torch.empty_like(hidden)  # every row is written below, chunk by chunk
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        for start in range(0, hidden.shape[0], CHUNK_TOKENS):
            rows, wanted = hidden[start:start + CHUNK_TOKENS], targets[start:start + CHUNK_TOKENS]
            scored = (wanted != -100).unsqueeze(1)
            picked = wanted.clamp(min=0).unsqueeze(1)
            logits = (rows @ weight.t()).float()
            log_probs = logits.log_softmax(-1)
            total = total - (log_probs.gather(1, picked) * scored).sum()
            grad_logits = (log_probs.exp().scatter_add(1, picked, -torch.ones_like(picked, dtype=torch.float32))
                           * scored).to(hidden.dtype)
            grad_hidden[start:start + CHUNK_TOKENS] = grad_logits @ weight
            grad_weight += (grad_logits.t() @ rows).float()
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_total.to(grad_hidden.dtype), grad_weight * grad_total.to(grad_weight.dtype), None


def chunked_loss(weight, hidden, targets):
    return ChunkedLinearCrossEntropy.apply(hidden, weight, targets)


def plain_loss(weight, hidden, targets):
    logits = (hidden @ weight.t()).float()
    return F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")


def use_fused_loss(model, on_gpu: bool, chunked: bool = False):
    """Make `model` (a causal LM) compute its training loss with Liger's kernel (plain math on CPU), or chunked."""
    if getattr(model.config, "final_logit_softcapping", None):
        # Gemma 2 caps its logits with tanh before the softmax; the fused kernel here would train a different loss
        raise WorkshopError(f"--fused-loss does not support {type(model).__name__}'s final logit soft-capping; "
                            "drop the flag")
    if getattr(model.get_output_embeddings(), "bias", None) is not None:
        raise WorkshopError(f"--fused-loss does not support {type(model).__name__}'s output bias; drop the flag")
    # Dynamo cannot trace Liger's Triton kernels: under --torch-compile the loss stays eager, the model compiled.
    loss_sum = chunked_loss if chunked else torch.compiler.disable(liger_loss_fn()) if on_gpu else plain_loss
    stock_forward = model.forward

    def forward(self, input_ids=None, attention_mask=None, labels=None, num_items_in_batch=None, **kwargs):
        if labels is None:
            return stock_forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden = self.base_model(input_ids, attention_mask=attention_mask, use_cache=False)[0]
        # Position i predicts token i + 1, as in the stock loss.
        hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        targets = labels[:, 1:].reshape(-1).to(hidden.device)
        # The Trainer passes the number of label tokens in the whole accumulated batch, so that gradient
        # accumulation weighs every token equally; without it, average over this batch.
        count = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum()
        weight = self.get_output_embeddings().weight.to(hidden.dtype)  # fp32 master weights, bf16/fp16 activations under amp
        return CausalLMOutput(loss=loss_sum(weight, hidden, targets) / count)

    model.forward = types.MethodType(forward, model)
    return model


def check_supported(deepspeed_config: dict | None):
    if zero_stage(deepspeed_config) == 3:
        # ZeRO-3 gathers the output weights only inside the stock forward's hooks; the fused loss reads it directly.
        raise WorkshopError("--fused-loss and --chunked-loss do not work with ZeRO stage 3 (the output weights "
                            "are partitioned); drop the flag or use stage 0-2")

