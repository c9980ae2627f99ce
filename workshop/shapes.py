"""Shapes of published checkpoints: the tables that model.py (random-weight copies, no download) and estimate.py
(DeepSpeed's memory estimates) read.

BLOOM_SHAPES: the BigScience BLOOM sizes the lessons use, keyed by short name.
FAMILIES: one published member of each other causal-LM family `--init random` can build, around 1B parameters:
its display name and Hub id, its transformers config class and the fields of its config.json that decide its shapes, and the
family's tiny variant for CPU runs (`--model llama-tiny`): the same config with these sizes, the embedded
tokenizer's 2,048 ids, and everything else (tied embeddings, ALiBi, parallel residual, ...) as published.
"""

BLOOM_VOCAB = 250880
BLOOM_SHAPES = {
    "bloom-560m": dict(hidden_size=1024, n_layer=24, n_head=16),
    "bloom-1b7": dict(hidden_size=2048, n_layer=24, n_head=16),
    "bloom-3b": dict(hidden_size=2560, n_layer=30, n_head=32),
    "bloom-7b1": dict(hidden_size=4096, n_layer=30, n_head=32),
}
# `--profile laptop`'s model: BLOOM's architecture at ~100M parameters on the embedded tokenizer's 2,048 ids, built
# with seeded random weights (no download). Its fp32 model states (16 bytes a parameter with Adam: 1.6 GB) outweigh
# a training process's libraries (~0.6 GB on a CPU), so ZeRO's sharding shows in a laptop's measured host memory.
BLOOM_LAPTOP = dict(hidden_size=768, n_layer=14, n_head=12)

_TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
FAMILIES = {
    "llama": dict(name="LLaMA", hub_id="TinyLlama/TinyLlama_v1.1", config="LlamaConfig", shape=dict(
        vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
        num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False),
        tiny=dict(_TINY, intermediate_size=128, num_key_value_heads=2)),
    # Mistral AI publishes no ~1B Mistral; H2O's Danube is a MistralForCausalLM of 1.8B (sliding-window attention).
    "mistral": dict(name="Mistral", hub_id="h2oai/h2o-danube-1.8b-base", config="MistralConfig", shape=dict(
        vocab_size=32000, hidden_size=2560, intermediate_size=6912, num_hidden_layers=24, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=16384, sliding_window=4096, tie_word_embeddings=False),
        tiny=dict(_TINY, intermediate_size=128, num_key_value_heads=2)),
    "qwen2": dict(name="Qwen2", hub_id="Qwen/Qwen2-1.5B", config="Qwen2Config", shape=dict(
        vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, tie_word_embeddings=True),
        tiny=dict(_TINY, intermediate_size=128, num_key_value_heads=2)),
    "opt": dict(name="OPT", hub_id="facebook/opt-1.3b", config="OPTConfig", shape=dict(
        vocab_size=50272, hidden_size=2048, ffn_dim=8192, num_hidden_layers=24, num_attention_heads=32,
        word_embed_proj_dim=2048, max_position_embeddings=2048),
        tiny=dict(_TINY, ffn_dim=128, word_embed_proj_dim=64)),
    "gpt_neox": dict(name="GPT-NeoX", hub_id="EleutherAI/pythia-1b", config="GPTNeoXConfig", shape=dict(
        vocab_size=50304, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=8,
        max_position_embeddings=2048, use_parallel_residual=True, tie_word_embeddings=False),
        tiny=dict(_TINY, intermediate_size=256)),
    "falcon": dict(name="Falcon", hub_id="tiiuae/falcon-rw-1b", config="FalconConfig", shape=dict(
        vocab_size=50304, hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, alibi=True,
        multi_query=False, new_decoder_architecture=False, parallel_attn=False, bias=True),
        tiny=_TINY),
    "gemma": dict(name="Gemma 3", hub_id="google/gemma-3-1b-pt", config="Gemma3TextConfig", shape=dict(
        vocab_size=262144, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256, sliding_window=512,
        max_position_embeddings=32768, tie_word_embeddings=True),
        tiny=dict(_TINY, intermediate_size=128, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16)),
}

# Every linear layer of a family's decoder blocks, by module name: what LoRA adapts by default (workshop/adapters.py).
# The output head (BLOOM's lm_head, tied to the 250,880-token embedding) is left out, as peft's "all-linear" does.
_ATTENTION_MLP = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # LLaMA's naming
_FUSED_QKV = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")  # BLOOM's, kept by GPT-NeoX and Falcon
LINEAR_LAYERS = {"bloom": _FUSED_QKV, "gpt_neox": _FUSED_QKV, "falcon": _FUSED_QKV, "llama": _ATTENTION_MLP,
                 "mistral": _ATTENTION_MLP, "qwen2": _ATTENTION_MLP, "gemma": _ATTENTION_MLP,
                 "opt": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")}
