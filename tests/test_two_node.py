"""Lesson 3 across two real SLURM nodes (.ci/start_slurm_two_node.sh: two slurmd in their own network and UTS
namespaces on one machine), on the CPU: DeepSpeed's CPU accelerator, gloo between the nodes, one rank a node.

Each launcher of slurm/multi_node.slurm (`deepspeed` per node under srun, `srun`, `ssh` through pdsh and an sshd
per node), the weak-scaling table by node count, and a node whose processes die mid-run.
"""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from test_deepspeed_lesson import OFFLINE
from test_multi_gpu import copy_lesson
from test_slurm import check_loggers_stopped, job_env
from workshop.fill_tables import build_tables

CLUSTER = Path(os.environ.get("WORKSHOP_SLURM2_DIR", "/tmp/workshop-slurm2"))
NODES = ("wsn1", "wsn2")
# one rank a node (GPUS=1), the #SBATCH sizes shrunk to what two CPU processes need
SBATCH = ["--nodes=2", "--gpus-per-node=1", "--cpus-per-task=1", "--mem=4G"]
TINY = ["--profile", "tiny", "--samples-per-gpu", "20", "--num-train-epochs", "1", "--save-strategy", "no",
        "--max-steps", "2"]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def cluster_env():
    """A student's environment pointed at the two-node cluster (SLURM_CONF; the test key for pdsh's ssh)."""
    env = {**job_env(), **OFFLINE, "GPUS": "1"}
    for line in (CLUSTER / "env").read_text().splitlines():
        name, _, value = line.partition("=")
        env[name] = value.strip('"')
    return env


@pytest.fixture(scope="module")
def two_nodes():
    problem = None
    if not (CLUSTER / "env").is_file():
        problem = f"no {CLUSTER}/env"
    else:
        shown = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], env=cluster_env(), capture_output=True,
                               text=True, timeout=30)
        idle = {line.split()[0] for line in shown.stdout.splitlines() if line.split()[1] in ("idle", "mixed")}
        if idle != set(NODES):
            problem = f"nodes not idle: {shown.stdout.strip() or shown.stderr.strip()}"
    if problem:
        message = f"no two-node cluster ({problem}); start it with `bash .ci/start_slurm_two_node.sh` (as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return cluster_env()


def submit(lesson, env, *args, launcher="deepspeed"):
    (lesson / "logs").mkdir(exist_ok=True)
    sent = subprocess.run(["sbatch", "--parsable", *SBATCH, "slurm/multi_node.slurm", *args], cwd=lesson,
                          env={**env, "LAUNCHER": launcher}, capture_output=True, text=True, check=True)
    return sent.stdout.strip()


def wait(job, env, timeout):
    """Poll squeue until the job has left; its JobState and ExitCode from scontrol."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True).stdout.strip():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job], env=env)
            pytest.fail(f"job {job} still running after {timeout} s")
        time.sleep(2)
    shown = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
    return re.search(r"JobState=(\S+)", shown).group(1), re.search(r"ExitCode=(\S+)", shown).group(1)


def node_processes(node, run_id):
    """The processes in NODE's network namespace whose command line names the run."""
    pids = subprocess.run(["ip", "netns", "pids", node], capture_output=True, text=True).stdout.split()
    found = []
    for pid in map(int, pids):
        try:
            if any(run_id in arg for arg in psutil.Process(pid).cmdline()):
                found.append(pid)
        except psutil.NoSuchProcess:
            pass
    return found


def check_two_node_run(lesson, job, launcher="deepspeed"):
    """One run folder; world size 2 over both nodes; each node's rank trained and saw the same loss."""
    [run_dir] = [path for path in (lesson / "logs").iterdir() if path.is_dir()]
    assert run_dir.name == f"multi_node_2x1-{job}"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed", manifest["error"]
    assert (manifest["world_size"], manifest["nodes"], manifest["host"]) == (2, 2, "wsn1")
    out = (run_dir / "train.out").read_text()
    ranks = dict(re.findall(r"\[workshop\] rank (\d) of 2 on (\S+)", out))
    assert ranks == {"0": "wsn1", "1": "wsn2"}, out[-3000:]
    losses = dict(re.findall(r"\[workshop\] rank (\d) on wsn\d: train_loss (\S+)", out))
    assert set(losses) == {"0", "1"} and losses["0"] == losses["1"], losses
    record = check_loggers_stopped(run_dir)
    assert record["training"]["exit_status"] == 0
    if launcher != "ssh":  # every srun task had loggers of its own on its node (ssh's remote ranks are not tasks)
        for node in NODES:
            tasks = [json.loads(path.read_text()) for path in run_dir.glob(f"loggers-{node}*.json")]
            assert tasks, f"no loggers-{node}*.json in {run_dir}"
            for task in tasks:
                assert task["node"] == node and task["exit_status"] == 0, task
                assert all(logger["stopped"] and logger["ended"] in ("exited by itself", "TERM", "KILL")
                           for logger in task["loggers"].values()), task
            logs = list(run_dir.glob(f"cpu_memory-{node}*.log"))
            assert logs and all(len(log.read_text().splitlines()) > 1 for log in logs), logs  # samples, not a header
    for node in NODES:
        assert node_processes(node, run_dir.name) == [], node
    return run_dir, manifest


@pytest.mark.parametrize("launcher", ["deepspeed", "srun", "ssh"])
def test_multi_node_launcher(two_nodes, tmp_path, launcher):
    lesson = copy_lesson(tmp_path / "repo")
    job = submit(lesson, two_nodes, *TINY, launcher=launcher)
    assert wait(job, two_nodes, 600) == ("COMPLETED", "0:0"), (lesson / f"logs/multi_node-{job}.out").read_text()
    run_dir, manifest = check_two_node_run(lesson, job, launcher)
    out = (run_dir / "train.out").read_text()
    if launcher == "ssh":  # the launcher's own pdsh mode reached the second node over ssh
        assert re.search(r"cmd = pdsh .*-w wsn1,wsn2", out), out[:3000]
    [row] = build_tables([str(lesson / "logs")], by_run=True)["deepspeed_multi_gpu_weak_scaling"].to_dict("records")
    assert (row["run"], row["status"], row["nodes"], row["GPUs (processes)"]) == \
        (run_dir.name, "completed", 2, 2)
    assert row["train_loss (run mean)"] > 0


def test_weak_scaling_over_one_and_two_nodes(two_nodes, tmp_path):
    lesson = copy_lesson(tmp_path / "repo")
    one = subprocess.run(["sbatch", "--parsable", "--nodes=1", *SBATCH[1:], "slurm/multi_node.slurm", *TINY],
                         cwd=lesson, env=two_nodes, capture_output=True, text=True, check=True).stdout.strip()
    two = submit(lesson, two_nodes, *TINY)
    assert wait(one, two_nodes, 600) == ("COMPLETED", "0:0")
    assert wait(two, two_nodes, 600) == ("COMPLETED", "0:0")
    rows = build_tables([str(lesson / "logs")], by_run=True)["deepspeed_multi_gpu_weak_scaling"].to_dict("records")
    assert [(row["nodes"], row["GPUs (processes)"], row["status"]) for row in rows] == \
        [(1, 1, "completed"), (2, 2, "completed")]
    assert rows[1]["efficiency (fewest-GPU runtime / runtime)"] > 0


def test_lost_node_ends_the_job_as_rank_lost(two_nodes, tmp_path):
    """Kill every process of the run on the second node mid-training: rank 0 must not wait for the time limit."""
    lesson = copy_lesson(tmp_path / "repo")
    job = submit(lesson, two_nodes, *TINY[:-1], "200", "--logging-steps", "1")
    deadline = time.monotonic() + 300
    while True:  # until a training step has been logged (both ranks are then inside the all-reduces)
        out = next((lesson / "logs").glob("*/train.out"), None)
        if out and "[workshop] step 1/" in out.read_text():
            break
        assert time.monotonic() < deadline, "no training step logged in 300 s"
        time.sleep(1)
    run_id = out.parent.name
    killed = node_processes("wsn2", run_id)
    assert killed, "no process of the run on wsn2"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    state, code = wait(job, two_nodes, 600)
    took = time.monotonic() - started
    assert state == "FAILED" and code != "0:0"
    assert took < 120, f"the job took {took:.0f} s to end after the node was lost"
    manifest = json.loads((out.parent / "manifest.json").read_text())
    text = out.read_text()
    [row] = build_tables([str(lesson / "logs")], by_run=True)["deepspeed_multi_gpu_weak_scaling"].to_dict("records")
    assert row["status"] == "rank lost", (manifest["status"], text[-3000:])
    assert "rank 1 of 2 on wsn2" in text and "rank 0 of 2 on wsn1" in text  # both ranks' output kept
    for node in NODES:
        assert node_processes(node, run_id) == [], node
    check_loggers_stopped(out.parent)
