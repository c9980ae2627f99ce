"""Lesson 3 without GPUs: the hostfile builder, the fail-fast checks, and real 2-process DeepSpeed runs on the CPU.

The 2-process runs go through the lesson's .slurm files (bash off-cluster with GPUS=2, and a real sbatch with
--gpus-per-node=2 on the local cluster's fake GPUs): DeepSpeed's CPU accelerator starts two ranks that talk over
gloo, exactly the path of a 2-GPU node except the device. Each takes a minute or two on 2 CPU cores.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from test_deepspeed_lesson import OFFLINE
from test_deepspeed_lesson import copy_lesson as copy_deepspeed_lesson
from conftest import walkthrough_logs
from test_slurm import check_loggers_stopped, job_env, wait_for_job
from workshop.config import WorkshopError
from workshop.fill_tables import ZERO_2GPU, build_tables, load_runs
from workshop.lessons import BY_NAME
from workshop.report.spread import steady_seconds, too_few_steps
from workshop.launch import LOWEST_PORT, check_hostfile, ephemeral_ports, expand_nodelist, free_port, hostfile

REPO = Path(__file__).resolve().parents[1]
LESSON_FILES = ("slurm/", "deepspeed_single_gpu/", "deepspeed_multi_gpu/", "workshop/")
TINY = ["--profile", "tiny", "--samples-per-gpu", "20", "--num-train-epochs", "1", "--save-strategy", "no"]
# the walk-through's examples a process (the registry's arguments), which lesson_logs' runs were made with
WALK = BY_NAME["deepspeed_multi_gpu"].walkthrough_args
WALK_PER_GPU = int(WALK[WALK.index("--samples-per-gpu") + 1])


@pytest.mark.parametrize("nodelist, names", [
    ("node[01-04]", ["node01", "node02", "node03", "node04"]),
    ("a[1-2],b3", ["a1", "a2", "b3"]),
    ("x,y,z", ["x", "y", "z"]),
    ("gpu[1,3-4],login-2", ["gpu1", "gpu3", "gpu4", "login-2"]),
    ("n[08-10]-ib", ["n08-ib", "n09-ib", "n10-ib"]),
    ("vm", ["vm"]),
])
def test_expand_nodelist(nodelist, names):
    assert expand_nodelist(nodelist) == names
    if shutil.which("scontrol"):  # the fallback must agree with SLURM's own expander
        shown = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
        if shown.stdout.split():  # older SLURM (22.05) refuses a suffix after the brackets
            assert shown.stdout.split() == names


def test_expand_nodelist_rejects_garbage():
    with pytest.raises(WorkshopError, match="cannot read node list"):
        expand_nodelist("node[a-c]")


def launch(*args, env=None):
    return subprocess.run([sys.executable, "-m", "workshop.launch", *args], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})


def test_hostfile_for_an_allocation(tmp_path):
    made = launch("hostfile", "--nodelist", "node[01-03]", "--slots", "4")
    assert made.returncode == 0, made.stderr
    assert made.stdout == "node01 slots=4\nnode02 slots=4\nnode03 slots=4\n"
    assert check_hostfile(made.stdout, expand_nodelist("node[01-03]")) == ["node01", "node02", "node03"]
    assert hostfile(["a1", "b3"], 2) == "a1 slots=2\nb3 slots=2\n"


def test_hostfile_naming_an_unknown_node_fails(tmp_path):
    (tmp_path / "hostfile").write_text("node01 slots=4\nnode07 slots=4\n")
    checked = launch("check-hostfile", str(tmp_path / "hostfile"), "--nodelist", "node[01-02]")
    assert checked.returncode == 2
    assert checked.stderr == ("error: hostfile line 2: node 'node07' is not in this allocation "
                              "(node01, node02)\n")


def test_master_port_is_below_the_ephemeral_range_and_skips_a_taken_one():
    """The multi-node test once lost its rendezvous: rank 0's TCPStore could not bind a port the kernel had
    handed to an outgoing connection meanwhile (EADDRINUSE). A port below the ephemeral range is never handed out."""
    low = ephemeral_ports()[0]
    printed = launch("port", env={"SLURM_JOB_ID": "4242"})
    assert printed.returncode == 0, printed.stderr
    port = int(printed.stdout)
    assert LOWEST_PORT <= port < max(low, LOWEST_PORT + 1000)
    assert port == free_port(seed=4242)  # one job id, one port: every node of a job may compute it
    assert free_port(seed=4243) != port
    with socket.socket() as taken:  # someone listens there: the next candidate is used
        taken.bind(("", port))
        taken.listen()
        other = free_port(seed=4242)
        assert other != port and LOWEST_PORT <= other


def test_an_odd_ephemeral_range_file_falls_back_to_linuxs_default(tmp_path):
    (tmp_path / "range").write_text("garbage\n")
    assert ephemeral_ports(tmp_path / "range") == (32768, 60999)
    (tmp_path / "range").write_text("20000\t30000\n")
    assert ephemeral_ports(tmp_path / "range") == (20000, 30000)


def test_more_gpus_than_visible_fails():
    counted = launch("gpus", "--want", "3", env={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert counted.returncode == 2
    assert counted.stderr.startswith("error: 3 GPUs requested but only 2 visible")
    assert launch("gpus", env={"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_GPUS_ON_NODE": "2"}).stdout == "2\n"


@pytest.mark.parametrize("flags, message", [
    # more than the embedded data grows to (13,372 examples)
    (["--samples-per-gpu", "7000"], "--samples-per-gpu 7000 x 2 processes = 14000 examples, more than --data embedded"),
    (["--samples-per-gpu", "10", "--global-batch-size", "12"],
     "--global-batch-size 12 is not a multiple of 2 processes x 4 per device = 8"),
    (["--subset-size", "40"], "sizes the data with --samples-per-gpu"),
])
def test_lesson_refuses_before_loading(flags, message):
    run = subprocess.run([sys.executable, "deepspeed_multi_gpu/train.py", "--profile", "tiny", *flags], cwd=REPO,
                         env={**os.environ, "WORLD_SIZE": "2"}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and message in run.stderr, run.stderr


def test_lesson_flags_are_parsed_with_the_trainings_in_one_pass(capsys):
    """--samples-per-gpu and --global-batch-size belong to the training's one parser: they set the data size and the
    accumulation from WORLD_SIZE, on top of the lesson's recipe and --profile, and --help lists them."""
    import importlib.util

    from workshop.config import parse_args

    spec = importlib.util.spec_from_file_location("lesson3_entry", REPO / "deepspeed_multi_gpu" / "train.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    cfg = parse_args(["--profile", "tiny", "--samples-per-gpu", "10", "--global-batch-size", "16"],
                     lesson="deepspeed_multi_gpu", lesson_flags=entry.WeakScaling(world_size=2))
    assert (cfg.subset_size, cfg.gradient_accumulation_steps, cfg.model) == (20, 2, "bloom-tiny")
    assert Path(cfg.deepspeed).resolve() == REPO / "deepspeed_single_gpu" / "configs" / "stage0.json"
    with pytest.raises(SystemExit):
        parse_args(["--help"], lesson="deepspeed_multi_gpu", lesson_flags=entry.WeakScaling(world_size=2))
    shown = capsys.readouterr().out
    assert "--samples-per-gpu" in shown and "--per-device-train-batch-size" in shown


def copy_lesson(copy):
    return copy_deepspeed_lesson(copy, prefixes=LESSON_FILES)


def check_two_process_run(run_dir, samples_per_gpu=WALK_PER_GPU):
    """A complete run folder of two DeepSpeed ranks: world size 2, data doubled, both ranks trained."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed", manifest["error"]
    assert manifest["lesson"] == "deepspeed_multi_gpu"
    assert manifest["world_size"] == 2
    assert manifest["subset_size"] == 2 * samples_per_gpu
    assert manifest["train_samples"] + manifest["eval_samples"] == 2 * samples_per_gpu
    # Each rank reads half the training set in micro-batches of 4, and takes an optimizer step every 4 of them
    # (20 examples a process: 18 to train, 5 micro-batches a rank, 2 steps; one rank alone would take 3).
    per_rank = -(-manifest["train_samples"] // 2)
    assert manifest["steps_per_epoch"] == -(-(-(-per_rank // 4)) // 4)

    out = (run_dir / "train.out").read_text()
    # DeepSpeed's launcher spawned two ranks, and each got as far as training and finishing.
    assert sorted(re.findall(r"spawned with command: .*'--local_rank=(\d)'", out)) == ["0", "1"], out[-3000:]
    assert out.count("[workshop] training ") == 2, out[-3000:]
    assert out.count("[workshop] done; run folder") == 2

    events = [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]
    assert any("loss" in e for e in events) and any("train_runtime" in e for e in events)
    record = check_loggers_stopped(run_dir)
    assert record["training"]["exit_status"] == 0
    return manifest


# ---------------------------------------------------------------------------------------------- the 2-process runs
def two_process_logs(tmp_path_factory):
    """logs/ holding the lesson's tiny walk-through: a real 2-process run of the weak-scaling job and of each of
    the six ZeRO configs through their .slurm files (GPUS=2 on the CPU, WALK_PER_GPU examples a process, one epoch:
    enough optimizer steps for a steady state), made once per session by conftest.py's walkthrough_logs. The tests
    below, tests/test_smoke.py and notebooks/03_multi_gpu.ipynb's test (tests/test_notebooks.py) read them."""
    return walkthrough_logs(tmp_path_factory, "deepspeed_multi_gpu")


@pytest.fixture(scope="module")
def lesson_logs(tmp_path_factory):
    return two_process_logs(tmp_path_factory)


@pytest.mark.slow
def test_weak_scaling_two_cpu_processes(lesson_logs):
    [run_dir] = lesson_logs.glob("weak_scaling_2gpu-local*")
    manifest = check_two_process_run(run_dir)
    assert manifest["config_name"] == "stage0"

    filled = subprocess.run([sys.executable, "-m", "workshop.fill_tables", "--by-run", str(lesson_logs), "--format", "json"],
                            cwd=REPO, capture_output=True, text=True)
    assert filled.returncode == 0, filled.stderr
    # 1 and 2 processes (`--gpus 1` overrides GPUS=2); the ZeRO runs are not in it
    rows = json.loads(filled.stdout)["deepspeed_multi_gpu_weak_scaling"]["rows"]
    one, two = sorted(rows, key=lambda row: row["GPUs (processes)"])
    [single] = lesson_logs.glob("weak_scaling_1gpu-local*")
    assert json.loads((single / "manifest.json").read_text())["world_size"] == 1
    assert (one["run"], one["GPUs (processes)"], one["samples per GPU"]) == (single.name, 1, WALK_PER_GPU)
    assert (two["run"], two["GPUs (processes)"], two["samples per GPU"]) == (run_dir.name, 2, WALK_PER_GPU)
    for row in (one, two):
        assert row["total runtime s (train_runtime)"] > 0 and row["train samples/s"] > 0
    assert one["efficiency (fewest-GPU runtime / runtime)"] == 1.0  # the fewest-process run is the baseline


@pytest.mark.slow
@pytest.mark.parametrize("config", ZERO_2GPU)
def test_zero_config_on_two_cpu_processes(lesson_logs, config):
    [run_dir] = lesson_logs.glob(f"{config}_2gpu-local*")
    manifest = check_two_process_run(run_dir)
    assert manifest["deepspeed_config"] == f"deepspeed_single_gpu/configs/{config}.json"
    assert manifest["config_name"] == config and manifest["settings"]["num_train_epochs"] == 1  # the script's flag
    events = [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]
    assert max(event["step"] for event in events) == manifest["steps_per_epoch"]  # one epoch, the script's flag
    # each process holds the model states its stage leaves it: every parameter (stages 1-2) or half (stage 3)
    states, whole = manifest["model_states"], 4 * manifest["parameters"]
    assert (states["world_size"], states["zero_stage"]) == (2, int(config[len("stage")]))
    shown = states["bytes_per_process"]["parameters"]
    assert shown == pytest.approx(whole / 2 if config.startswith("stage3") else whole, rel=0.01)


@pytest.mark.slow
def test_zero_runs_fill_the_2gpu_tables(lesson_logs):
    tables = build_tables([lesson_logs], by_run=True)
    rows = tables["deepspeed_multi_gpu_zero_2gpu"].to_dict("records")
    assert [row["config"] for row in rows] == list(ZERO_2GPU)
    for row in rows:
        assert row["status"] == "completed" and row["GPUs (processes)"] == 2
        for column in ("total runtime s (train_runtime)", "train samples/s", "train steps/s", "train_loss (run mean)",
                       "eval loss (last eval)", "peak CPU MiB (psrecord)"):
            assert isinstance(row[column], float) and row[column] > 0, (row["config"], column, row[column])
        assert row["peak GPU MiB per GPU (nvidia-smi)"] == "n/a (no GPU)"  # CPU ranks: the cell says why
    savings = tables["deepspeed_multi_gpu_zero_savings"]
    assert list(savings["stage"]) == ["stage1", "stage2", "stage3"]
    # a pair with too few timed steps for a steady state gets no percentage of its whole-run runtimes (like the
    # answer), nor a pair whose steady intervals overlap; the others get the percentage
    runs = {run.name: run for run in load_runs([lesson_logs])}
    for _, row in savings.iterrows():
        short = any(too_few_steps(runs[name]) is not None for name in row["run"].split(" vs "))
        cell = row["runtime change % (train_runtime)"]
        if short:
            assert cell == "n/a (too few timed steps)", (row["stage"], cell)
            continue
        plain, offload = (steady_seconds(runs[name]) for name in row["run"].split(" vs "))
        # a percentage only where the steady intervals separate; otherwise the cell says it is noise
        assert isinstance(cell, float) if plain.separated_from(offload) else cell == "n/a (within noise)", \
            (row["stage"], cell)
    assert list(savings["GPU memory saving % (peak per GPU)"]) == [f"n/a ({stage}: n/a (no GPU))"
                                                                  for stage in savings["stage"]]


@pytest.mark.slurm
@pytest.mark.slow
def test_sbatch_weak_scaling_on_two_fake_gpus(slurm_cluster, tmp_path):
    lesson = copy_lesson(tmp_path / "repo")
    (lesson / "logs").mkdir()
    # The script asks for a big node; the local cluster's 2 fake GPUs are enough, with less memory and CPU.
    submitted = subprocess.run(["sbatch", "--parsable", "--gpus-per-node=2", "--mem=8G", "--cpus-per-task=2",
                                "slurm/multi_gpu_weak_scaling.slurm", *TINY],
                               cwd=lesson, env={**job_env(), **OFFLINE}, capture_output=True, text=True)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    state, exit_code = wait_for_job(job_id, timeout=1200)
    job_out = lesson / "logs" / f"weak_scaling-{job_id}.out"
    assert (state, exit_code) == ("COMPLETED", "0:0"), job_out.read_text()[-4000:]
    assert "weak scaling on 2 GPU(s)" in job_out.read_text()
    check_two_process_run(lesson / "logs" / f"weak_scaling_2gpu-{job_id}", samples_per_gpu=20)  # TINY's


def test_ranks_on_one_cpu_split_its_cores(monkeypatch):
    """Two ranks training on one machine's CPU take half its cores each: torch's default of a thread per core gave
    two ranks on 2 cores 4 threads. A thread count the user set (OMP_NUM_THREADS) is kept."""
    import torch

    from workshop.entry import share_the_cores

    if torch.cuda.is_available():
        pytest.skip("with a GPU each rank trains on its own GPU, not on the shared cores")
    cores, before = len(os.sched_getaffinity(0)), torch.get_num_threads()
    try:
        torch.set_num_threads(cores + 1)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setenv("LOCAL_SIZE", "2")  # what DeepSpeed's launcher sets for two processes on this node
        share_the_cores(torch)
        assert torch.get_num_threads() == max(1, cores // 2)

        torch.set_num_threads(cores + 1)
        monkeypatch.setenv("OMP_NUM_THREADS", str(cores + 1))
        share_the_cores(torch)
        assert torch.get_num_threads() == cores + 1
    finally:
        torch.set_num_threads(before)
