"""Jobs ended by a limit: host memory (`--mem`), time (`--time`), GPU memory, and precision that needs a GPU.

Real trainings in a fresh copy of the repository; the SLURM tests submit to the local cluster
(`bash .ci/start_slurm.sh`), whose cgroup enforces `--mem`. Fixtures and helpers come from
tests/test_slurm.py and tests/test_failures.py.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.test_failures import status_cells, wait_for_events
from tests.test_slurm import check_loggers_stopped, job_env, repo_copy, wait_for_job  # noqa: F401 - fixture
from workshop.config import WorkshopError, parse_args
from workshop.deepspeed.config import check_gpu_precision
from workshop.runlog import fragmentation_hint

# Micro-batches of 1 train in ~550 MiB; evaluation (every 2 steps, after the first loss is logged) takes all
# 40 held-out examples at once at 512 tokens and needs ~1.2 GiB. Under --mem=900M (the loggers share the
# cgroup) the kernel kills the training at its first evaluation, with a logged loss to show.
EVAL_SPIKE = ["--profile", "tiny", "--subset-size", "400", "--max-length", "512", "--per-device-train-batch-size",
              "1", "--gradient-accumulation-steps", "1", "--eval-strategy", "steps", "--per-device-eval-batch-size",
              "40", "--max-steps", "6"]


def sbatch(root, *args):
    (root / "logs").mkdir(exist_ok=True)
    submitted = subprocess.run(["sbatch", "--parsable", *args], cwd=root, env=job_env(), capture_output=True,
                               text=True)
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip().split(";")[0]


@pytest.mark.slurm
@pytest.mark.slow
def test_host_oom_kill_under_mem_shows_oom(slurm_cluster, repo_copy):  # noqa: F811
    job_id = sbatch(repo_copy, "--mem=900M", "slurm/baseline.slurm", *EVAL_SPIKE)
    state, _ = wait_for_job(job_id, timeout=600)
    job_out = (repo_copy / "logs" / f"baseline-{job_id}.out").read_text()
    assert state == "OUT_OF_MEMORY", job_out  # SLURM saw the cgroup's OOM kill too
    run_dir = repo_copy / "logs" / f"baseline-{job_id}"

    record = check_loggers_stopped(run_dir)
    training = record["training"]
    assert training["exit_status"] == 137 and training["ended"] == "oom-killed", record
    assert training["oom_kills"] >= 1 and training["memory_limit_mb"] == 900
    assert "OOM killer stopped the training" in job_out
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"  # SIGKILL: no end written

    assert status_cells(repo_copy, run_dir.name) == {"oom (host memory limit)"}
    history = [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]
    assert any("loss" in event for event in history)  # the partial metrics: losses logged before the kill

# Far more than the 1-minute limit even on an idle machine (an idle run does ~25 steps/s: 18,000 steps is 12 min).
ENDLESS = ["--profile", "tiny", "--subset-size", "40", "--gradient-accumulation-steps", "1", "--num-train-epochs",
           "2000", "--save-strategy", "no", "--eval-strategy", "no", "--logging-steps", "3"]


@pytest.mark.slurm
@pytest.mark.slow
def test_time_limit_shows_timeout(slurm_cluster, repo_copy):  # noqa: F811
    # The job's .out goes outside logs/, so only the end record (loggers.json) can tell fill_tables it timed out.
    job_id = sbatch(repo_copy, "--time=1", "--output=job-%j.out", "slurm/baseline.slurm", *ENDLESS)
    run_dir = repo_copy / "logs" / f"baseline-{job_id}"
    wait_for_events(run_dir, timeout=300)
    # Paused (SIGSTOP) once it has logged, the training waits out the limit without spending a minute of a core;
    # common.sh wakes it (SIGCONT) with the SIGTERM it forwards, so it ends as a running training does.
    [pid] = [line.split()[3].rstrip(":") for line in (repo_copy / f"job-{job_id}.out").read_text().splitlines()
             if line.startswith("[workshop] training pid ")]
    os.kill(int(pid), signal.SIGSTOP)
    state, _ = wait_for_job(job_id, timeout=300)  # SLURM checks limits every ~30 s; KillWait adds at most 30 s
    job_out = (repo_copy / f"job-{job_id}.out").read_text()
    assert state == "TIMEOUT" and "DUE TO TIME LIMIT" in job_out, job_out

    record = check_loggers_stopped(run_dir)
    assert record["training"]["ended"] == "time limit" and record["training"]["exit_status"] == 143, record
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "cancelled" and manifest["end_time"]  # SIGTERM: the training wrote its end
    assert status_cells(repo_copy, run_dir.name) == {"timeout"}


def no_gpu_env():
    return dict(job_env(), CUDA_VISIBLE_DEVICES="")  # no GPU for the training, even on a GPU machine


def check_one_error_line(run, expected):
    """Exit 2 and one `error:` line (stderr, or stdout under common.sh, which sends both to train.out)."""
    output = run.stdout + run.stderr
    assert run.returncode == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], output
    assert "Traceback" not in output
    return errors[0]


@pytest.mark.parametrize("flag", ["--fp16", "--precision fp16"])  # bf16 trains on a CPU (test_precision_checkpointing)
def test_precision_flag_without_gpu_is_one_error_line(repo_copy, flag):  # noqa: F811
    run = subprocess.run(["bash", "slurm/baseline.slurm", "--profile", "tiny", *flag.split()], cwd=repo_copy,
                         env=no_gpu_env(), capture_output=True, text=True, timeout=300)
    error = check_one_error_line(run, f"{flag} needs a CUDA GPU")
    assert "drop the flag" in error and "--gpus=1" in error
    [run_dir] = (repo_copy / "logs").glob("baseline-local*")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and f"{flag} needs a CUDA GPU" in manifest["error"]
    check_loggers_stopped(run_dir)


def test_deepspeed_json_fp16_true_without_gpu_is_one_error_line(repo_copy):  # noqa: F811
    config = repo_copy / "fp16_on.json"
    stage0 = json.loads((repo_copy / "deepspeed_single_gpu" / "configs" / "stage0.json").read_text())
    config.write_text(json.dumps({**stage0, "fp16": {"enabled": True}}))
    run = subprocess.run([sys.executable, "deepspeed_single_gpu/train.py", "--profile", "tiny", "--ds-config",
                          str(config), "--run-dir", "logs/fp16-on", "--output-dir", "outputs/fp16-on"],
                         cwd=repo_copy, env=no_gpu_env(), capture_output=True, text=True, timeout=300)
    error = check_one_error_line(run, "fp16.enabled is true, which needs a CUDA GPU")
    assert '"auto"' in error and "--gpus=1" in error
    assert json.loads((repo_copy / "logs" / "fp16-on" / "manifest.json").read_text())["status"] == "failed"


def test_precision_check_keeps_the_defaults():
    lesson = parse_args([])
    auto = {"fp16": {"enabled": "auto"}, "bf16": {"enabled": "auto"}}
    for cfg in (lesson, parse_args(["--profile", "tiny"])):  # fp16 unset and "auto": config's fp32 fallback
        check_gpu_precision(cfg, None, has_cuda=False)
        check_gpu_precision(cfg, auto, has_cuda=False)
    check_gpu_precision(parse_args(["--fp16"]), {"fp16": {"enabled": True}}, has_cuda=True)  # fine with a GPU
    check_gpu_precision(parse_args(["--bf16"]), {"bf16": {"enabled": True}}, has_cuda=False)  # bf16 runs on a CPU
    with pytest.raises(WorkshopError, match="fp16.enabled is true"):
        check_gpu_precision(lesson, {"fp16": {"enabled": True}}, has_cuda=False)
    with pytest.raises(WorkshopError, match="--fp16 needs a CUDA GPU"):
        check_gpu_precision(parse_args(["--fp16"]), auto, has_cuda=False)


def test_an_oom_with_much_cached_free_memory_names_the_allocator_setting():
    """The H200's micro-batch searches under --gpu-memory-limit 80 (docs/results/lesson5_h200-2026-12-03): bloom-1b7
    with checkpointing at 32 failed with 30 GiB reserved but free; bloom-1b7 without it at 32 had none free."""
    total = {"device": "cuda:0", "total_mib": 143156.0, "max_reserved_mib": 80726.0}
    fragmented = {**total, "allocated_mib": 39863.2, "reserved_mib": 70250.0}
    full = {**total, "allocated_mib": 79942.3, "reserved_mib": 80180.0}
    hint = fragmentation_hint(fragmented, limit_mib=80 * 1024)
    assert hint == ("; 30387 MiB of it was reserved but free (fragmentation): "
                    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True may let this size fit")
    assert fragmentation_hint(full, limit_mib=80 * 1024) == ""
    assert fragmentation_hint(fragmented, limit_mib=None) == ""  # a quarter of the whole 140 GiB card is more
    assert fragmentation_hint(fragmented, 80 * 1024, "expandable_segments:True") == ""  # already set: no advice
    assert fragmentation_hint({"device": "cpu"}) == ""  # no CUDA figures


@pytest.mark.parametrize("stage, says, never", [(None, "use DeepSpeed", "ZeRO"),
                                                 (2, "a higher ZeRO stage or offload", "use DeepSpeed"),
                                                 (3, "offload more", "higher ZeRO stage")])
def test_the_oom_advice_fits_the_run(stage, says, never):
    """A run already under DeepSpeed is not told to use DeepSpeed (bloom-1b7's ZeRO-2 offload OOM on the H100
    was), and every DeepSpeed run hears of the chunked loss: the logits were what did not fit."""
    from workshop.entry import oom_advice

    advice = oom_advice(stage)
    assert says in advice and never not in advice
    assert ("--chunked-loss" in advice) == (stage is not None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (deselected by scripts/test.sh without one)")
def test_gpu_oom_is_caught_with_the_memory_figures(repo_copy):  # noqa: F811
    # bloom-560m's 250,880-way logits for hundreds of 512-token examples at once fit no GPU.
    run = subprocess.run(["bash", "slurm/baseline.slurm", "--model", "bloom-560m", "--init", "random", "--data",
                          "embedded", "--per-device-train-batch-size", "512", "--max-steps", "2"],
                         cwd=repo_copy, env=job_env(), capture_output=True, text=True, timeout=900)
    assert run.returncode == 3, run.stdout + run.stderr
    [line] = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: out of GPU memory (cuda:") and "MiB allocated" in line, line
    assert "Traceback" not in run.stderr
    [run_dir] = (repo_copy / "logs").glob("baseline-local*")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "oom" and manifest["exit_code"] == 3
    memory = manifest["oom_memory"]
    assert 0 < memory["allocated_mib"] <= memory["reserved_mib"] <= memory["max_reserved_mib"] <= memory["total_mib"]
    assert memory["total_mib"] == pytest.approx(torch.cuda.get_device_properties(0).total_memory / 2**20, abs=1)
    record = check_loggers_stopped(run_dir)
    assert record["training"]["exit_status"] == 3 and record["training"]["ended"] == "exited"
    assert status_cells(repo_copy, run_dir.name) == {"oom"}
