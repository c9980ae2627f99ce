"""Everything the DeepSpeed side of a run needs before the Trainer exists, one module a step:

    config.py     a DeepSpeed JSON read and checked once (our key allowlist + DeepSpeed's own models)
    setup.py      the config as the flags amend it, the GPU cap, the CPU process group, where weights are built
    ops.py        DeepSpeed's C++ ops built once into a shared folder (`python -m workshop.prebuild_ops`)
    preflight.py  will this run fit? expected GPU and host memory against the node's limits
    estimate.py   DeepSpeed's model-state estimates per stage (`python -m workshop.estimate`)
    plan.py       prepare(cfg) -> Plan: the steps above in order, as workshop.train calls them

Nothing is imported here, so `import workshop.deepspeed.config` costs no torch.
"""
