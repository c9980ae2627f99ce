"""`--fsdp` modes as data: what each asks of PyTorch's fully_shard. Torch-free, so fill_tables' mapping table
(workshop/lessons/fsdp.py) reads them without importing the training's FSDP code (torch and transformers: 3.7 s of
every fill_tables command)."""

MODES = {  # --fsdp -> fully_shard's settings (offload is added where the mode says so)
    "full_shard": dict(reshard_after_forward=True),
    "shard_grad_op": dict(reshard_after_forward=False),
    "full_shard_offload": dict(reshard_after_forward=True, offload=True),
}
