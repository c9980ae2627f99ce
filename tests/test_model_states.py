"""Model-state bytes per process (workshop.model_states) read from real DeepSpeed engines, against the closed form
of what ZeRO keeps per process, for lesson 2's stage 0-3 configs on 1 and 2 CPU processes, with the tiny and the
laptop model.

Closed form, fp32 training with Adam, N parameters, w processes (P: this process's share of N):
    stage 0: parameters 4N, gradients 4N, optimizer 8N (two moments; the weights are the master weights)
    stage 1: parameters 4N, gradients 4N, optimizer 12P (fp32 master partition + two moments)
    stage 2: parameters 4N, gradients 4P, optimizer 12P
    stage 3: parameters 4P, gradients 4P, optimizer 12P
Stages 1-3 keep an fp32 master copy even of fp32 weights (DeepSpeed shares it with the weights only under torch
autocast); stage 0 in fp32 updates the weights themselves. So on 2 processes stage 3 holds 10N per process, 5/8 of
stage 0's 16N, and half of what stage 3 holds on one process (20N); in fp16/bf16 (stage 0: 2N + 2N + 12N) it is
half of stage 0's as well.
Stages 1-2 flatten the parameters and pad the flat buffer to 2w elements (and each parameter to 16 bytes), so P
is N/w up to that padding; stage 3 splits every parameter on its own, so P = the sum of ceil(n_i / w), exactly.

Run as a script (`python tests/test_model_states.py MODEL OUT_DIR`, once a process with the env:// variables set, as
run_probe does) this file is the probe: the four stages' engines one after another, each on a fresh model, one
optimizer step on a random batch each; rank 0 writes what each holds. One process for the four engines: the figures
are the same byte for byte as four processes gave (checked on the tiny model, 1 and 2 processes), and the closed-form
assertions below would catch an engine that saw its predecessor's state; it saves three interpreters' imports and
process groups per rank.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "deepspeed_single_gpu" / "configs"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def probe(model_name, out_dir):
    sys.path.insert(0, str(REPO))
    from workshop.deepspeed.setup import remove_shm_buffers
    from workshop.deepspeed.ops import setup_build_env

    setup_build_env()  # the ops the workshop's build folder holds
    import deepspeed

    world = int(os.environ.get("WORLD_SIZE", "1"))
    for stage in (0, 1, 2, 3):
        probe_engine(deepspeed, model_name, stage, world, Path(out_dir) / f"stage{stage}.json")
    # DeepSpeed's CPU backend leaves a 66 MiB buffer a rank in /dev/shm (RAM); workshop.train removes its own
    deepspeed.comm.barrier()
    remove_shm_buffers()


def probe_engine(deepspeed, model_name, stage, world, out):
    import torch

    from workshop.model import load_model
    from workshop.model_states import engine_model_states

    config = json.loads((CONFIGS / f"stage{stage}.json").read_text())
    config.update(train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=1, train_batch_size=world,
                  fp16={"enabled": False}, bf16={"enabled": False})
    model, _ = load_model(model_name, seed=0)
    numels = [p.numel() for p in model.parameters()]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    ids = torch.randint(0, 2048, (1, 16))
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    engine.step()
    states = engine_model_states(engine)
    if int(os.environ.get("RANK", "0")) == 0:
        out.write_text(json.dumps({"states": states, "numels": numels}))


def closed_form(stage, numels, world):
    """(parameters, gradients, optimizer) bytes per process, and how far stages 1-2's padding may move them."""
    n = sum(numels)
    share = sum(math.ceil(numel / world) for numel in numels) if stage == 3 else n / world
    slack = 0 if stage in (0, 3) else 2 * world + 4 * len(numels)  # padding elements, at most, in the share
    form = {0: (4 * n, 4 * n, 8 * n), 1: (4 * n, 4 * n, 12 * share), 2: (4 * n, 4 * share, 12 * share),
            3: (4 * share, 4 * share, 12 * share)}[stage]
    return dict(zip(("parameters", "gradients", "optimizer"), form)), 12 * slack


def run_probe(model, processes, out_dir):
    """One probe per process, each with the environment DeepSpeed's launcher would give it (torch.distributed's
    env:// variables), started here: the launcher's own two interpreters added a third of each probe's time."""
    from workshop.launch import free_port

    port = free_port()
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(REPO), "WORLD_SIZE": str(processes),
           "LOCAL_SIZE": str(processes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    ranks = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), model, str(out_dir)], cwd=REPO,
                              env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for rank in range(processes)]
    try:
        outputs = [rank.communicate(timeout=900)[0] for rank in ranks]
    finally:  # a rank that failed leaves the other waiting in a collective: stop it
        for rank in ranks:
            rank.kill()
    assert all(rank.returncode == 0 for rank in ranks), "\n".join(output[-3000:] for output in outputs)
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))  # no RAM left behind
    return {stage: json.loads((out_dir / f"stage{stage}.json").read_text()) for stage in (0, 1, 2, 3)}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["bloom-tiny", "bloom-laptop"])
@pytest.mark.parametrize("processes", [1, 2])
def test_bytes_per_process_are_the_closed_form(model, processes, tmp_path):
    found = {}
    for stage, probe_out in run_probe(model, processes, tmp_path).items():
        states, numels = probe_out["states"], probe_out["numels"]
        assert (states["world_size"], states["zero_stage"]) == (processes, stage)
        assert states["device"] == dict.fromkeys(("parameters", "gradients", "optimizer"), "cpu")
        expected, slack = closed_form(stage, numels, processes)
        for kind, value in expected.items():
            assert abs(states["bytes_per_process"][kind] - value) <= slack, (stage, kind, states, expected)
        found[stage] = sum(states["bytes_per_process"].values())
    if processes == 2:  # 16N, 14N, 12N, 10N: each stage partitions one more kind of state
        assert found[0] > found[1] > found[2] > found[3]
        assert found[3] / found[0] == pytest.approx(10 / 16, abs=0.01)
        one_process = sum(closed_form(3, numels, 1)[0].values())  # 20N, what test (model, 1) reads from an engine
        assert found[3] / one_process == pytest.approx(0.5, abs=0.01)  # two processes each hold half


if __name__ == "__main__":
    probe(*sys.argv[1:])
