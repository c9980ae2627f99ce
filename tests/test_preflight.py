"""Lesson 2 at its real sizes: the memory preflight, the GPU memory cap, ZeRO-3 models built partitioned, the
run's step counts, and the NVMe offload config (DeepSpeed's own config classes; a tiny run where async_io builds).
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_deepspeed_lesson import OFFLINE, copy_lesson, free_port
from test_slurm import job_env
from workshop.config import WorkshopError, parse_args
from workshop.deepspeed.config import ConfigError, load_ds_config, needed_ops
from workshop.deepspeed.estimate import GIB, bloom_params, bloom_shape
from workshop.deepspeed.preflight import PROCESS_GIB, PROCESS_GIB_CPU, check_async_io, emulated_card, host_limit, preflight

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "deepspeed_single_gpu" / "configs"
LESSON = dict(lesson="deepspeed_single_gpu", require_deepspeed=True)


def lesson_cfg(config, *flags):
    return parse_args(["--ds-config", str(CONFIGS / f"{config}.json"), *flags], **LESSON)


def deepspeed_zero3(model, **kwargs):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    total, largest = bloom_params(bloom_shape(model))
    return estimate_zero3_model_states_mem_needs(total, largest, num_gpus_per_node=1, **kwargs)


# ---------------------------------------------------------------------------------- the estimate and its limit

def test_host_need_is_deepspeeds_estimate_plus_the_process(monkeypatch, capsys):
    monkeypatch.delenv("WORKSHOP_HOST_MEMORY_GIB", raising=False)
    cfg = lesson_cfg("stage3_offload", "--model", "7b1", "--host-memory-gib", "400")
    record, refusal = preflight(cfg, load_ds_config(cfg.deepspeed), gpu_total_gib=139.8, gpus=1)
    cpu, gpu, _ = deepspeed_zero3("bloom-7b1", cpu_offload=True, cpu_offload_params=True, zero_init=True)
    assert record["host_gib"] == pytest.approx(cpu / GIB + PROCESS_GIB, abs=0.01)
    assert record["gpu_gib"] > gpu / GIB  # the model states plus one micro-batch's activations
    assert record["host_limit_gib"] == 400 and "--host-memory-gib" in record["source"]
    assert refusal is None
    assert "bloom-7b1 under ZeRO 3 + optimizer+params offload" in capsys.readouterr().out


def test_too_little_host_memory_is_refused_with_the_figure_to_ask_for(monkeypatch):
    monkeypatch.delenv("WORKSHOP_HOST_MEMORY_GIB", raising=False)
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "8192")  # --mem=8G, below this machine's MemTotal
    cfg = lesson_cfg("stage2_offload", "--model", "1b7")
    record, refusal = preflight(cfg, load_ds_config(cfg.deepspeed), gpus=1)
    assert record["host_limit_gib"] == 8 and "SLURM --mem" in record["source"]
    assert f"--mem={math.ceil(record['host_gib'])}G" in refusal and "this job may use 8.0 GiB" in refusal


H100_GIB = 79.2  # what torch reports for the H100 80GB HBM3 the runs below used


@pytest.mark.parametrize("config, micro_batch, ran_out", [
    ("stage2", "16", False), ("stage2_offload", "16", False), ("stage2_offload", "32", True)])
def test_the_gpu_estimate_sides_with_what_an_h100_measured(monkeypatch, config, micro_batch, ran_out):
    """bloom-1b7, bf16, one micro-batch a step, on an H100 (docs/results/issue28_h100-2026-12-06-b): stage2 at 16
    peaked at 75,510 MiB reserved, offload at 16 at 54,238, offload at 32 ran out of memory on its fp32 logits."""
    monkeypatch.setenv("WORKSHOP_HOST_MEMORY_GIB", "400")
    cfg = lesson_cfg(config, "--model", "1b7", "--per-device-train-batch-size", micro_batch,
                     "--gradient-accumulation-steps", "1")
    record, _ = preflight(cfg, load_ds_config(cfg.deepspeed), gpu_total_gib=H100_GIB, gpus=1, precision="bf16")
    assert (record["gpu_gib"] > H100_GIB) == ran_out, record


def test_checkpointing_and_the_chunked_loss_leave_the_estimate(monkeypatch):
    """The run that ran out on its logits, with the chunked loss (one chunk's logits) and checkpointing (a layer's
    input kept, one layer rebuilt at a time): the preflight no longer counts what these never hold."""
    monkeypatch.setenv("WORKSHOP_HOST_MEMORY_GIB", "400")
    need = {}
    for extra in ((), ("--gradient-checkpointing",), ("--chunked-loss",), ("--gradient-checkpointing", "--chunked-loss")):
        cfg = lesson_cfg("stage2_offload", "--model", "1b7", "--per-device-train-batch-size", "32",
                         "--gradient-accumulation-steps", "1", *extra)
        need[extra], _ = preflight(cfg, load_ds_config(cfg.deepspeed), gpu_total_gib=H100_GIB, gpus=1,
                                   precision="bf16")
    plain, checkpointed, chunked, both = (need[key]["gpu_gib"] for key in need)
    assert both < min(checkpointed, chunked) <= max(checkpointed, chunked) < plain
    assert plain - chunked > 30  # 32 x 512 x 250,880 logits with their fp32 copies: the largest tensor


def test_zenflow_host_need_counts_its_buffers_beside_classic_offload(monkeypatch):
    """ZenFlow keeps a second gradient buffer, a stale weight copy and a second pair of Adam moments on the host
    (16 bytes a parameter, workshop.estimate): bloom-1b7 needs ~26 GiB more than under stage2_offload."""
    monkeypatch.setenv("WORKSHOP_HOST_MEMORY_GIB", "400")
    need = {}
    for config in ("stage2_offload", "stage2_zenflow"):
        cfg = lesson_cfg(config, "--model", "1b7")
        need[config], refusal = preflight(cfg, load_ds_config(cfg.deepspeed), gpu_total_gib=79.2, gpus=1)
        assert refusal is None
    params = bloom_params(bloom_shape("bloom-1b7"))[0]
    assert need["stage2_zenflow"]["host_gib"] - need["stage2_offload"]["host_gib"] == pytest.approx(
        16 * params / GIB, abs=0.01)
    assert need["stage2_zenflow"]["gpu_gib"] > need["stage2_offload"]["gpu_gib"]  # the top-k columns' states


def test_zenflow_update_interval_follows_the_runs_gradient_accumulation(capsys):
    """ZenFlow makes update_interval DeepSpeed's gradient accumulation, which scales each micro-batch's loss."""
    from workshop.deepspeed.setup import load_deepspeed_config

    zenflow = load_deepspeed_config(lesson_cfg("stage2_zenflow"))["zero_optimization"]["zenflow"]
    assert zenflow["update_interval"] == 4 and "zenflow" not in capsys.readouterr().out  # the lesson's own
    zenflow = load_deepspeed_config(lesson_cfg("stage2_zenflow", "--gradient-accumulation-steps", "8"))[
        "zero_optimization"]["zenflow"]
    assert zenflow["update_interval"] == 8 and zenflow["select_interval"] == 400
    assert "zenflow.update_interval 4 in" in capsys.readouterr().out


def test_a_tiny_cpu_run_fits_a_small_mem_and_a_gpu_run_counts_cuda(monkeypatch):
    """A classroom's tiny CPU run under `sbatch --mem=900M` is not refused for CUDA's host memory it never uses;
    the same flags with a GPU count CUDA's libraries and context."""
    monkeypatch.delenv("WORKSHOP_HOST_MEMORY_GIB", raising=False)
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "900")
    cfg = parse_args(["--profile", "tiny"], lesson="baseline")
    cpu_record, cpu_refusal = preflight(cfg, None, gpu_total_gib=None, gpus=1)
    assert cpu_refusal is None and cpu_record["host_gib"] == pytest.approx(PROCESS_GIB_CPU, abs=0.05)
    gpu_record, gpu_refusal = preflight(cfg, None, gpu_total_gib=80, gpus=1)
    assert gpu_record["host_gib"] == pytest.approx(PROCESS_GIB, abs=0.05) and "--mem=4G" in gpu_refusal


def test_host_need_is_per_node_on_several_nodes(monkeypatch):
    """Two nodes of one process each (DeepSpeed's launcher sets LOCAL_SIZE): each node needs one process's share."""
    monkeypatch.setenv("WORKSHOP_HOST_MEMORY_GIB", "64")
    cfg = parse_args(["--profile", "tiny"], lesson="baseline")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_SIZE", "1")
    two_nodes, _ = preflight(cfg, None, gpu_total_gib=80)
    monkeypatch.setenv("LOCAL_SIZE", "2")
    one_node, _ = preflight(cfg, None, gpu_total_gib=80)
    assert two_nodes["host_gib"] == pytest.approx(PROCESS_GIB, abs=0.05)
    assert one_node["host_gib"] == pytest.approx(2 * PROCESS_GIB, abs=0.05)


def test_a_gpu_shortfall_only_warns(monkeypatch, capsys):
    monkeypatch.setenv("WORKSHOP_HOST_MEMORY_GIB", "500")
    cfg = lesson_cfg("stage2", "--model", "7b1", "--gpu-memory-limit", "80")
    record, refusal = preflight(cfg, load_ds_config(cfg.deepspeed), gpu_total_gib=80, gpus=1)
    assert refusal is None and record["gpu_gib"] > 80
    assert "warning: expected" in capsys.readouterr().out


def test_host_limit_is_the_smallest_unless_given(monkeypatch):
    monkeypatch.delenv("WORKSHOP_HOST_MEMORY_GIB", raising=False)
    monkeypatch.setenv("SLURM_MEM_PER_NODE", str(10**9))  # larger than any MemTotal: MemTotal wins
    assert host_limit()[1] in ("MemTotal", "memory cgroup")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "2048")
    assert host_limit() == (2.0, "SLURM --mem")
    monkeypatch.setenv("WORKSHOP_HOST_MEMORY_GIB", "128")  # a MemTotal that starts low: the override wins
    assert host_limit() == (128.0, "WORKSHOP_HOST_MEMORY_GIB")
    assert host_limit(64) == (64.0, "--host-memory-gib")


@pytest.mark.slow
def test_a_7b1_job_with_too_small_mem_stops_before_loading(tmp_path):
    """The lesson's script under a job whose --mem is too small: one error line with the figure, exit 2, and the
    manifest keeps the estimate; nothing of the model was built (the run takes the launcher's seconds only)."""
    copy = copy_lesson(tmp_path / "repo")
    env = {**job_env(), **OFFLINE, "SLURM_MEM_PER_NODE": "16384"}
    env.pop("WORKSHOP_HOST_MEMORY_GIB", None)
    run = subprocess.run(["bash", "slurm/stage3_offload.slurm", "--model", "7b1", "--init", "random",
                          "--data", "embedded"], cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 2, (run.stdout + run.stderr)[-3000:]
    [error] = [line for line in run.stdout.splitlines() if line.startswith("error:")]  # train.out, through tee
    [run_dir] = (copy / "logs").glob("stage3_offload-local*")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["exit_code"] == 2
    assert manifest["preflight"]["host_limit_gib"] == 16
    need = manifest["preflight"]["host_gib"]
    assert "bloom-7b1" in error and f"--mem={math.ceil(need)}G" in error and "16.0 GiB (SLURM --mem)" in error
    # Without a GPU the host holds DeepSpeed's offloaded states and what a GPU would have held (the gathered
    # layer, the activations), besides the process: never less than DeepSpeed's own host estimate.
    offloaded, _, _ = deepspeed_zero3("bloom-7b1", cpu_offload=True, cpu_offload_params=True, zero_init=True)
    assert need > offloaded / GIB + PROCESS_GIB_CPU > 170
    assert manifest["peak_memory"]["host_peak_rss_mib"] < 4096  # well below one fp32 copy of 7b1 (26 GiB)


# ---------------------------------------------------------------------------------- --gpu-memory-limit

def test_gpu_memory_limit_parsing_and_the_cards_it_emulates():
    assert lesson_cfg("stage2", "--gpu-memory-limit", "80").gpu_memory_limit == 80.0
    with pytest.raises(WorkshopError, match="--gpu-memory-limit must be a positive"):
        lesson_cfg("stage2", "--gpu-memory-limit", "0")
    assert [emulated_card(g) for g in (32, 40, 80)] == ["V100 32GB", "A100 40GB", "H100 80GB"]
    assert emulated_card(50) == "a 50 GiB GPU"


def test_a_cpu_run_ignores_the_gpu_cap_with_a_notice(capsys):
    import torch

    from workshop.deepspeed.setup import cap_gpu_memory

    if torch.cuda.is_available():
        pytest.skip("this checks the machine without a GPU")
    assert cap_gpu_memory(lesson_cfg("stage2", "--gpu-memory-limit", "40")) == (None, None)
    assert "--gpu-memory-limit 40 ignored: no CUDA GPU here" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- ZeRO-3 built partitioned

def train_tiny(tmp_path, config, *flags):
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(REPO), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    run = subprocess.run([sys.executable, str(REPO / "deepspeed_single_gpu" / "train.py"), "--ds-config",
                          str(CONFIGS / f"{config}.json"), "--profile", "tiny", "--eval-strategy", "no",
                          "--save-strategy", "no", "--no-save-final", "--run-dir", "run", *flags],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return json.loads((tmp_path / "run" / "manifest.json").read_text()), run.stdout


def test_zero3_model_is_created_partitioned_and_a_truncated_run_says_so(tmp_path):
    manifest, out = train_tiny(tmp_path, "stage3", "--max-steps", "2", "--gpu-memory-limit", "40")
    tiny = bloom_params(bloom_shape("bloom-tiny"))[0]
    assert manifest["created_partitioned"] > 0  # every parameter had a ZeRO-3 id right after creation
    assert "model created partitioned (deepspeed.zero.Init)" in out
    assert manifest["parameters"] == tiny  # counted from ds_numel: the partitioned tensors themselves are empty
    assert manifest["steps_done"] == 2
    assert manifest["steps_planned"] == math.ceil(manifest["steps_per_epoch"] * 3) > 2
    assert f"2 of the lesson's {manifest['steps_planned']:,} steps" in out
    assert manifest["gpu_memory_limit"] is None  # ignored without a GPU
    assert set(manifest["preflight"]) == {"gpu_gib", "host_gib", "host_limit_gib", "source"}
    assert not (tmp_path / "bloom-qa-finetuned" / "final").exists()  # --no-save-final


# ---------------------------------------------------------------------------------- NVMe offload

def test_nvme_config_passes_deepspeeds_own_validation():
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    cfg = load_ds_config(CONFIGS / "stage3_offload_nvme.json")
    zero = DeepSpeedZeroConfig(**cfg["zero_optimization"])
    device = lambda offload: getattr(offload.device, "value", offload.device)  # noqa: E731 - an enum or a string
    assert (zero.stage, device(zero.offload_param), device(zero.offload_optimizer)) == (3, "nvme", "nvme")
    assert needed_ops(cfg) == ["cpu_adam", "async_io"]


def test_an_aio_typo_is_refused(tmp_path):
    cfg = json.loads((CONFIGS / "stage3_offload_nvme.json").read_text())
    cfg["aio"]["queue_deph"] = 8
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"aio.queue_deph: unknown key \(did you mean 'queue_depth'\?\)"):
        load_ds_config(tmp_path / "bad.json")


def test_nvme_path_flag_replaces_the_configs_path(tmp_path):
    from workshop.deepspeed.setup import load_deepspeed_config

    cfg = lesson_cfg("stage3_offload_nvme", "--nvme-path", str(tmp_path), "--model", "3b")
    zero = load_deepspeed_config(cfg)["zero_optimization"]
    assert zero["offload_param"]["nvme_path"] == zero["offload_optimizer"]["nvme_path"] == str(tmp_path)
    # Each parameter swap buffer must hold the largest tensor, bloom-3b's embedding (DeepSpeed asserts it at start:
    # "More elements 642252800 than buffer size 100000000" on the H200).
    assert zero["offload_param"]["buffer_size"] == bloom_params(bloom_shape("bloom-3b"))[1] == 642252800


@pytest.mark.slow
def test_nvme_offload_trains_tiny_where_async_io_builds(tmp_path):
    missing = check_async_io()
    if missing:  # the preflight's own line is what a user would see
        pytest.skip(missing)
    manifest, out = train_tiny(tmp_path, "stage3_offload_nvme", "--max-steps", "2", "--nvme-path",
                               str(tmp_path / "nvme"))
    assert manifest["status"] == "completed" and manifest["steps_done"] == 2
    assert "NVMe offload to" in out
    # DeepSpeed's swappers made their folders there (they remove the swap files themselves at exit)
    assert (tmp_path / "nvme" / "zero_stage_3" / "optimizer" / "rank0").is_dir()
    assert any(path.name.endswith("params") for path in (tmp_path / "nvme" / "zero_stage_3").iterdir())


def test_without_a_gpu_the_line_speaks_of_host_memory(monkeypatch, capsys):
    """On a CPU the model states and activations live in host memory: the line says so and counts them there (the
    laptop model's fp32 states are ~1.5 GiB), and names no GPU."""
    monkeypatch.delenv("WORKSHOP_HOST_MEMORY_GIB", raising=False)
    cfg = parse_args(["--profile", "laptop"], lesson="baseline")
    record, refusal = preflight(cfg, None, gpu_total_gib=None, gpus=1)
    out = capsys.readouterr().out
    assert "1 process(es) on the CPU (no GPU)" in out and "GiB host memory per node" in out
    assert "GPU(s)" not in out and "per GPU" not in out
    assert record["host_gib"] > PROCESS_GIB_CPU + 1.4 and refusal is None
