"""slurm/baseline.slurm end to end: under a real sbatch, as a plain bash script, and with a failing training.

Each test runs in a fresh copy of the repository (tracked and untracked files, not what .gitignore
ignores) so logs/ and outputs/ never land in the working tree. The tiny training takes a minute or two
on 2 CPU cores. The SLURM test needs a cluster: `bash .ci/start_slurm.sh` starts one on this machine.
"""

import ctypes.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from workshop.lessons import BY_NAME
from workshop.monitor import HEADER

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_copy(tmp_path):
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    copy = tmp_path / "repo"
    for name in filter(None, files):
        if (REPO / name).is_file():  # ls-files still lists files deleted but not yet committed
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    return copy


def job_env():
    """The environment of a student with the venv activated, outside any SLURM allocation."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    venv_bin = str(Path(sys.executable).parent)  # psrecord lives here too
    env.update(PATH=f"{venv_bin}{os.pathsep}{env['PATH']}", WORKSHOP_PYTHON=sys.executable,
               GPU_LOG_INTERVAL="0.5", CPU_LOG_INTERVAL="1")
    return env


def wait_for_job(job_id, timeout):
    """Poll squeue until the job leaves the queue, then read its JobState and ExitCode from scontrol."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True)
        if queued.returncode != 0 or not queued.stdout.strip():
            break
        time.sleep(2)
    else:
        subprocess.run(["scancel", job_id])
        pytest.fail(f"job {job_id} still queued or running after {timeout} s")
    info = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return re.search(r"JobState=(\S+)", info).group(1), re.search(r"ExitCode=(\S+)", info).group(1)


def check_loggers_stopped(run_dir):
    """loggers.json says both loggers stopped, and no process of this run is left (by its run id)."""
    record = json.loads((run_dir / "loggers.json").read_text())
    assert record["run_id"] == run_dir.name
    for name in ("gpu", "cpu"):
        logger = record["loggers"][name]
        assert logger["stopped"] and logger["ended"] in ("exited by itself", "TERM", "KILL"), logger
        assert run_dir.name in logger["command"]
    leftovers = [
        process.info for process in psutil.process_iter(["pid", "cmdline"])
        if any(run_dir.name in arg for arg in process.info["cmdline"] or [])
    ]
    assert leftovers == []
    assert deepspeed_shm_buffers(record["training"]["command"]) == []  # no RAM left behind in /dev/shm
    return record


def training_started(script):
    """Read a .slurm script's output (a Popen with stdout piped) up to `[workshop] training pid N: COMMAND`;
    returns N and COMMAND."""
    for line in script.stdout:
        if line.startswith("[workshop] training pid "):
            pid, command = line.removeprefix("[workshop] training pid ").split(": ", 1)
            return int(pid), command
    pytest.fail(f"the script ended (status {script.wait()}) before it started the training")


def deepspeed_shm_buffers(command):
    """The /dev/shm buffers of the CPU backend of the DeepSpeed launch `command` (named after its master port)
    that exist now."""
    port = re.search(r"--master_port=(\d+)", command)
    if port is None:  # not a DeepSpeed launch: nothing of this kind to leave behind
        return []
    return sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port[1]}_*"))


def check_completed_run(run_dir):
    assert run_dir.is_dir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["run_id"] == run_dir.name
    history = (run_dir / "log_history.jsonl").read_text().splitlines()
    assert history and all(json.loads(line) for line in history)
    assert (run_dir / "train.out").read_text().strip()

    gpu_lines = (run_dir / "gpu_memory.csv").read_text().splitlines()
    if shutil.which("nvidia-smi") is None and ctypes.util.find_library("nvidia-ml") is None:
        assert len(gpu_lines) == 1 and gpu_lines[0].startswith("# no GPU: ")
    else:
        assert gpu_lines[0] == HEADER and len(gpu_lines) > 1

    cpu_rows = [line.split() for line in (run_dir / "cpu_memory.log").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert cpu_rows and all(len(row) == 4 for row in cpu_rows)
    assert max(float(row[2]) for row in cpu_rows) > 0  # psrecord's "Real (MB)" column of the training

    record = check_loggers_stopped(run_dir)
    assert record["training"]["exit_status"] == 0

    tables = subprocess.run([sys.executable, "-m", "workshop.fill_tables", "--by-run", "logs/"],
                            cwd=run_dir.parents[1], capture_output=True, text=True)
    assert tables.returncode == 0, tables.stderr
    assert run_dir.name in tables.stdout


@pytest.mark.slurm
@pytest.mark.slow
def test_sbatch_baseline_tiny(slurm_cluster, repo_copy):
    (repo_copy / "logs").mkdir()  # --output=logs/%x-%j.out fails the job if logs/ is missing
    submitted = subprocess.run(["sbatch", "--parsable", "slurm/baseline.slurm", "--profile", "tiny"],
                               cwd=repo_copy, env=job_env(), capture_output=True, text=True)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]

    state, exit_code = wait_for_job(job_id, timeout=900)
    job_out = repo_copy / "logs" / f"baseline-{job_id}.out"
    assert (state, exit_code) == ("COMPLETED", "0:0"), job_out.read_text()
    assert f"[workshop] run baseline-{job_id}" in job_out.read_text()
    check_completed_run(repo_copy / "logs" / f"baseline-{job_id}")


@pytest.mark.slow
def test_bash_baseline_tiny_off_cluster(repo_copy):
    # Started from elsewhere: the script must still find the repository and put logs/ there.
    run = subprocess.run(["bash", str(repo_copy / "slurm" / "baseline.slurm"), "--profile", "tiny"],
                         cwd=repo_copy.parent, env=job_env(), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    [run_dir] = (repo_copy / "logs").glob("baseline-local*")
    check_completed_run(run_dir)


def test_failing_training_still_stops_the_loggers(repo_copy):
    run = subprocess.run(["bash", "slurm/baseline.slurm", "--profile", "tiny", "--model", "no-such-model"],
                         cwd=repo_copy, env=job_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    [run_dir] = (repo_copy / "logs").glob("baseline-local*")
    record = check_loggers_stopped(run_dir)
    assert record["training"]["exit_status"] == run.returncode
    assert "no-such-model" in (run_dir / "train.out").read_text()


def test_the_walkthrough_goes_on_past_a_failed_run_and_lists_it(repo_copy):
    """scripts/run_workshop.sh in class: a run that fails does not stop the ones after it, the tables are filled from
    what ran, and the failed runs are listed at the end with the command that reruns each; exit status 1."""
    lessons = [BY_NAME["baseline"], BY_NAME["make_it_fast"]]
    for lesson in lessons:
        (repo_copy / lesson.entry).unlink()  # its run fails at once: python cannot open the entry
    env = dict(job_env(), WORKSHOP_VENV=sys.prefix, HF_HUB_OFFLINE="1")  # the set-up reuses this venv
    run = subprocess.run(["bash", "scripts/run_workshop.sh", *(lesson.name for lesson in lessons)], cwd=repo_copy,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    commands = [shlex.join(command) for lesson in lessons for command in lesson.walkthrough_commands()]
    for command in commands:  # each tried, each listed with its rerun command
        assert f": bash {command}\n" in run.stdout
        assert re.search(rf"\[workshop\]   exit \d+: bash {re.escape(command)}$", run.stderr, re.M), run.stderr
    assert f"[workshop] {len(commands)} run(s) failed; the tables above hold the others" in run.stderr
    assert "=== filled tables" in run.stdout
    assert run.stdout.index("=== filled tables") > run.stdout.rindex(commands[-1])


def test_killed_job_stops_training_and_loggers(repo_copy):
    """SIGTERM to the script (what scancel or a time limit sends) stops the training and both loggers."""
    script = subprocess.Popen(["bash", "slurm/baseline.slurm", "--profile", "tiny"], cwd=repo_copy,
                              env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in script.stdout:  # wait until the training and both loggers run
        if line.startswith("[workshop] loggers:"):
            break
    time.sleep(2)
    script.terminate()
    output = line + script.communicate(timeout=60)[0]
    assert script.returncode == 143, output
    assert "got SIGTERM: stopping the training" in output
    [run_dir] = (repo_copy / "logs").glob("baseline-local*")
    record = check_loggers_stopped(run_dir)  # also: no process of the run (training included) is left
    assert record["training"]["exit_status"] not in (None, 0)


def test_missing_psrecord_is_a_clear_error(repo_copy, tmp_path):
    bin_dir = tmp_path / "bin"  # a python with no psrecord beside it, and none on PATH
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = dict(job_env(), PATH=f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", WORKSHOP_PYTHON="python")
    run = subprocess.run(["bash", "slurm/baseline.slurm", "--profile", "tiny"], cwd=repo_copy, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "[workshop] error: psrecord not found" in run.stderr
    assert not (repo_copy / "logs").exists()  # it stopped before starting anything


@pytest.mark.parametrize("flag", ["--output-dir", "--output-dir="])
def test_an_output_dir_given_to_the_script_reaches_the_training(repo_copy, flag):
    """common.sh adds --output-dir outputs/<run> only when the user gave none; had it added its own after the
    user's, argparse would keep the script's. Given a file, the training's own check names it: the user's arrived."""
    args = [flag, "/etc/hostname"] if flag.endswith("dir") else [flag + "/etc/hostname"]
    run = subprocess.run(["bash", "slurm/baseline.slurm", "--profile", "tiny", *args], cwd=repo_copy, env=job_env(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "error: --output-dir /etc/hostname is a file, not a folder" in run.stdout + run.stderr


@pytest.mark.parametrize("script, args, flag", [
    ("baseline.slurm", ["--run-dir", "logs/baseline-1234"], "--run-dir"),
    ("baseline.slurm", ["--profile", "tiny", "--run-dir=logs/old"], "--run-dir"),
    ("stage2_offload.slurm", ["--ds-config", "deepspeed_single_gpu/configs/stage3.json"], "--ds-config"),
    ("multi_gpu_zero.slurm", ["stage1", "--ds-config=x.json"], "--ds-config"),
    ("precision.slurm", ["stage2", "bf16", "--precision", "fp32"], "--precision"),
    ("precision.slurm", ["none", "fp32", "--config-name=mine"], "--config-name"),
])
def test_arguments_the_script_sets_are_refused_not_overridden(repo_copy, script, args, flag):
    """argparse keeps the last of two flags: the script's own would silently win over the user's, or the reverse."""
    if not (repo_copy / "slurm" / script).is_file():
        pytest.fail(f"slurm/{script} is gone: pick another script that sets {flag}")
    run = subprocess.run(["bash", f"slurm/{script}", *args], cwd=repo_copy, env=job_env(), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"[workshop] error: {flag} is set by this script" in run.stderr
    assert not (repo_copy / "logs").exists()  # refused before a run folder or a logger
