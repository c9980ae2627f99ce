"""python -m workshop.doctor on this machine: healthy through slurm/doctor.slurm (exit 0, nothing failed), and with
real faults made for the test, each a FAIL that names its fix: a Hub model not in the offline cache, libaio hidden
from DeepSpeed's compiler check, an NVMe path that cannot be written, SLURM's --mem below the preflight, and a venv
without the Jupyter kernel."""
import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from test_slurm import job_env, repo_copy, wait_for_job  # noqa: F401 (repo_copy: a fixture)
from workshop.deepspeed.preflight import check_async_io

REPO = Path(__file__).resolve().parents[1]
HIDE_LIBAIO = """#!/bin/bash
# the real compiler, asked for a library that is not there instead of libaio: a node without libaio-dev
args=(); for a in "$@"; do [[ $a == -laio ]] && a=-laio_hidden_by_the_test; args+=("$a"); done
exec /usr/bin/gcc "${args[@]}"
"""


def student_env(**extra):
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(REPO),
               WORKSHOP_PYTHON=sys.executable, **extra)
    return env


def test_a_healthy_node_passes_through_the_slurm_file(tmp_path):
    if check_async_io():  # the lesson's NVMe config needs libaio: without it this node is not healthy
        pytest.skip(check_async_io())
    run = subprocess.run(["bash", "slurm/doctor.slurm", "--lesson", "deepspeed_single_gpu", "--model", "tiny",
                          "--nvme-path", str(tmp_path / "nvme"), "--nvme-test-mib", "8"],
                         cwd=REPO, env=student_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("[workshop] doctor on ")
    assert "| check " in run.stdout and "\n0 failed, " in run.stdout
    for name in ("Python and torch", "host memory (MemTotal)", "SLURM --mem", "DeepSpeed ops", "NVMe path",
                 "libaio (NVMe offload)", "offline cache", "/dev/shm", "SLURM", "Jupyter kernel"):
        assert f"| {name} " in run.stdout, name
    assert "GB/s" in run.stdout  # the NVMe path was measured


def make_faulty_node(tmp_path):
    """A venv without the kernel (the main venv's packages through a .pth), a PATH whose compiler cannot find
    libaio, an empty Hugging Face cache and Jupyter data dir, and a file where the NVMe folder should be."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [packages] = (venv / "lib").glob("python*/site-packages")
    (packages / "workshop_main.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("gcc", "cc", "x86_64-linux-gnu-gcc"):
        (bin_dir / name).write_text(HIDE_LIBAIO)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "jupyter").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    return venv / "bin" / "python", student_env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", HF_HOME=str(tmp_path / "hf"),
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter"), JUPYTER_PATH="", SLURM_MEM_PER_NODE="512")


def test_each_fault_fails_with_its_fix_and_json_parses(tmp_path):
    python, env = make_faulty_node(tmp_path)
    run = subprocess.run([str(python), "-m", "workshop.doctor", "--lesson", "deepspeed_single_gpu", "--model",
                          "llama", "--nvme-path", str(tmp_path / "a-file" / "nvme"), "--json"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    checks = {check["name"]: check for check in json.loads(run.stdout)}
    failed = {name for name, check in checks.items() if check["status"] == "FAIL"}
    assert {"model in cache", "libaio (NVMe offload)", "NVMe path", "SLURM --mem", "Jupyter kernel"} <= failed
    assert checks["model in cache"]["fix"] == "python -m workshop.prefetch --model TinyLlama/TinyLlama_v1.1"
    assert checks["libaio (NVMe offload)"]["fix"].startswith("apt-get install libaio-dev")
    assert "a-file/nvme is not writable (NotADirectoryError" in checks["NVMe path"]["detail"]
    assert "--nvme-path" in checks["NVMe path"]["fix"]
    mem = checks["SLURM --mem"]
    assert mem["detail"].startswith("0.5 GiB < about ")
    asked = int(mem["fix"].split("--mem=")[1].split("G")[0])  # the preflight's figure, rounded up
    assert asked > 0.5 and mem["fix"].startswith("sbatch --mem=") and mem["fix"].endswith(".slurm")
    assert "ipykernel install --sys-prefix --name deepspeed-workshop" in checks["Jupyter kernel"]["fix"]
    for check in checks.values():  # every failure says how to fix it
        assert check["status"] in ("OK", "WARN", "FAIL") and (check["status"] == "OK" or check["fix"]), check


def test_the_cost_of_a_build_is_the_longest_compile_the_runs_here_measured(tmp_path):
    """The manifests' excluded_windows (workshop/windows.py): a window that compiled counts, a load does not."""
    from workshop.doctor_checks import measured_build_seconds

    real = json.loads((REPO / "tests" / "data" / "logs" / "run_complete" / "baseline-1001" / "manifest.json")
                      .read_text())
    assert measured_build_seconds(tmp_path) is None
    for name, seconds, compiled in (("stage2-1", 48.5, True), ("stage2-2", 2.1, False), ("stage3-3", 31.0, True)):
        (tmp_path / name).mkdir()
        window = {"what": "deepspeed_ops", "start": 0, "end": seconds, "seconds": seconds, "compiled": compiled}
        (tmp_path / name / "manifest.json").write_text(json.dumps({**real, "excluded_windows": [window]}))
    assert measured_build_seconds(tmp_path) == (48.5, "stage2-1")


@pytest.mark.slurm
def test_sbatch_doctor_ends_the_job_as_its_checks_do(slurm_cluster, repo_copy, tmp_path):
    """Through sbatch, as the README says to run it before class: the job's own --mem is what the doctor compares
    with the lesson's preflight (tiny: about 0.8 GiB), and the job ends COMPLETED or FAILED as the checks do."""
    (repo_copy / "logs").mkdir()
    jobs = {}
    for mem in ("4G", "600M"):  # enough, and below the lesson's need (the doctor itself peaks near 460 MiB)
        submitted = subprocess.run(
            ["sbatch", "--parsable", f"--mem={mem}", "slurm/doctor.slurm", "--lesson", "deepspeed_single_gpu",
             "--model", "tiny", "--nvme-path", str(tmp_path / f"nvme-{mem}"), "--nvme-test-mib", "8", "--json"],
            cwd=repo_copy, env={**job_env(), "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
        assert submitted.returncode == 0, submitted.stderr
        jobs[mem] = submitted.stdout.strip().split(";")[0]
    for mem, job_id in jobs.items():
        state, exit_code = wait_for_job(job_id, timeout=300)
        out = (repo_copy / "logs" / f"doctor-{job_id}.out").read_text()
        checks = {check["name"]: check for check in json.loads(out[out.index("\n[") + 1:out.rindex("]") + 1])}
        memory = checks["SLURM --mem"]
        if mem == "4G":
            assert (state, exit_code) == ("COMPLETED", "0:0"), out
            assert memory["status"] == "OK" and memory["detail"].startswith("4.0 GiB >= about "), memory
        else:
            assert (state, exit_code) == ("FAILED", "1:0"), out
            assert memory["status"] == "FAIL" and memory["fix"].startswith("sbatch --mem="), memory
