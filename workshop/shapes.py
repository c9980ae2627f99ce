"""Shapes of the published BigScience BLOOM checkpoints: the one table that model.py (random-weight copies) and
estimate.py (DeepSpeed's memory estimates) read, so neither needs a download. Keys are the short names."""

BLOOM_VOCAB = 250880
BLOOM_SHAPES = {
    "bloom-560m": dict(hidden_size=1024, n_layer=24, n_head=16),
    "bloom-1b7": dict(hidden_size=2048, n_layer=24, n_head=16),
    "bloom-3b": dict(hidden_size=2560, n_layer=30, n_head=32),
    "bloom-7b1": dict(hidden_size=4096, n_layer=30, n_head=32),
}
