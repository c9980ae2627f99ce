"""Checkpoints that move (lesson 7, issue 26): `python -m workshop.export` on real tiny ZeRO runs.

Two trainings, each made once per session (made_once) and shared by the tests here: a ZeRO-3 run of one process,
and a ZeRO-2 run of two CPU processes through lesson 3's slurm/multi_gpu_zero.slurm (bash, GPUS=2), both four steps
with a checkpoint every two. The ZeRO-2 run's step-2 checkpoint resumes under ZeRO-3 on one process.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import made_once
from test_slurm import job_env
from workshop.export import PROBE_IDS
from workshop.model import load_saved

REPO = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
STEPS = ["--profile", "tiny", "--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "1",
         "--logging-steps", "1", "--max-steps", "4", "--save-strategy", "steps", "--save-steps", "2",
         "--eval-strategy", "no"]


def one_process(port):
    """What DeepSpeed's launcher sets for one process (slurm/common.sh's `--launcher python`)."""
    return {**os.environ, **OFFLINE, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def train_one_process(folder, config, *args, port=29631):
    done = subprocess.run([sys.executable, "deepspeed_single_gpu/train.py", "--ds-config",
                           f"deepspeed_single_gpu/configs/{config}.json", "--output-dir", str(folder / "outputs"),
                           "--run-dir", str(folder / "run"), *args], cwd=REPO, env=one_process(port),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder / "run"


def make_zero3(folder):
    train_one_process(folder, "stage3", *STEPS, "--subset-size", "40")


def make_zero2_two_processes(folder):
    env = {**job_env(), **OFFLINE, "GPUS": "2", "WORKSHOP_LOGS_ROOT": str(folder / "logs"),
           "WORKSHOP_OUTPUTS_ROOT": str(folder / "outputs")}
    done = subprocess.run(["bash", "slurm/multi_gpu_zero.slurm", "stage2", *STEPS, "--samples-per-gpu", "20",
                           "--num-train-epochs", "1", "--no-save-final"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory):
    return made_once(tmp_path_factory, "export-zero3", make_zero3) / "run"


@pytest.fixture(scope="module")
def zero2_run(tmp_path_factory):
    logs = made_once(tmp_path_factory, "export-zero2-2proc", make_zero2_two_processes) / "logs"
    (run,) = logs.glob("stage2_2gpu-*")
    return run


def export(*args):
    return subprocess.run([sys.executable, "-m", "workshop.export", *args], cwd=REPO, env={**os.environ, **OFFLINE},
                          capture_output=True, text=True, timeout=600)


def probe(model):
    with torch.no_grad():
        return model(torch.tensor(PROBE_IDS)).logits


def losses(run_dir):
    events = [json.loads(line) for line in (Path(run_dir) / "log_history.jsonl").read_text().splitlines()]
    return {event["step"]: event["loss"] for event in events if "loss" in event}


@pytest.mark.slow
def test_zero3_run_exports_the_trained_model(zero3_run, tmp_path):
    """ZeRO-3's fp32 master weights, joined by zero_to_fp32, reload as a plain model whose logits are the trained
    model's: the Trainer's final/ (saved after the same last step) gives the same logits."""
    done = export("--run-dir", str(zero3_run), "--out", str(tmp_path / "model"))
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "model" / "export.json").read_text())
    assert record["format"] == "deepspeed" and record["step"] == 4 and record["checkpoint"].endswith("checkpoint-4")
    assert record["reloaded_logits_max_abs_diff"] <= 1e-5
    exported, _ = load_saved(tmp_path / "model")
    assert all(param.numel() > 0 for param in exported.parameters())  # no ZeRO-3 `Size([0])` placeholders
    settings = json.loads((zero3_run / "manifest.json").read_text())["settings"]
    final, _ = load_saved(Path(settings["output_dir"]) / "final")
    torch.testing.assert_close(probe(exported), probe(final), rtol=1e-5, atol=1e-5)
    # and it is the trained model, not the seeded start: the step-2 checkpoint's weights differ
    earlier = export("--run-dir", str(zero3_run), "--checkpoint", str(Path(settings["output_dir"]) / "checkpoint-2"),
                     "--out", str(tmp_path / "step2"))
    assert earlier.returncode == 0, earlier.stderr[-3000:]
    assert not torch.allclose(probe(load_saved(tmp_path / "step2")[0]), probe(final))


@pytest.mark.slow
def test_zero2_checkpoint_of_two_processes_exports(zero2_run, tmp_path):
    """Two processes' ZeRO-2 optimizer shards join into the model the Trainer saved in the same checkpoint."""
    settings = json.loads((zero2_run / "manifest.json").read_text())["settings"]
    done = export("--run-dir", str(zero2_run), "--out", str(tmp_path / "model"))
    assert done.returncode == 0, done.stderr[-3000:]
    saved, _ = load_saved(Path(settings["output_dir"]) / "checkpoint-4")
    torch.testing.assert_close(probe(load_saved(tmp_path / "model")[0]), probe(saved), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_zero2_on_two_processes_resumes_under_zero3_on_one(zero2_run, tmp_path):
    """DeepSpeed's universal checkpoint: the 2-process ZeRO-2 run's step-2 checkpoint, converted, resumes under
    ZeRO-3 in one process with the same global batch (4 rows), and steps 3 and 4 give the losses the 2-process
    run logged (fp32; only the order of the sums differs)."""
    settings = json.loads((zero2_run / "manifest.json").read_text())["settings"]
    checkpoint = tmp_path / "checkpoint-2"  # a copy: the shared run stays as it was made
    shutil.copytree(Path(settings["output_dir"]) / "checkpoint-2", checkpoint, copy_function=shutil.copy2)
    from workshop.checkpoint_seal import seal
    seal(checkpoint)  # copied by this user: the copy's own file times
    converted = export("--run-dir", str(zero2_run), "--checkpoint", str(checkpoint), "--universal")
    assert converted.returncode == 0, converted.stderr[-3000:]
    assert (checkpoint / "latest_universal").read_text().strip() == "global_step2_universal"
    run = train_one_process(tmp_path / "resumed", "stage3", *STEPS, "--per-device-train-batch-size", "4",
                            "--subset-size", "40", "--save-strategy", "no", "--no-save-final",
                            "--resume", str(checkpoint), port=29632)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["zero_stage"] == 3 and manifest["world_size"] == 1
    assert manifest["resumed_from"] == str(checkpoint)
    before, after = losses(zero2_run), losses(run)
    assert sorted(after) == [3, 4]  # it went on from step 2, not from step 0
    for step in (3, 4):
        assert after[step] == pytest.approx(before[step], rel=1e-5), (step, before, after)


@pytest.mark.slow
def test_export_refuses_bad_input_in_one_line(zero3_run, tmp_path):
    missing = export("--run-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1
    assert "no such folder" in missing.stderr
    # the real run's manifest, with an output folder that holds no checkpoint (as --save-strategy no leaves it)
    manifest = json.loads((zero3_run / "manifest.json").read_text())
    manifest["settings"]["output_dir"] = str(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    empty = export("--run-dir", str(tmp_path / "run"))
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1, empty.stderr
    assert empty.stderr.startswith("error: ") and "has no whole checkpoint" in empty.stderr
