"""Shared fixtures. `slurm_cluster`: a real SLURM cluster (start one with `bash .ci/start_slurm.sh`)."""

import os
import shutil
import subprocess

import pytest


def _slurm_problem():
    """None when `sinfo` answers and shows a usable node, else why not."""
    if shutil.which("sinfo") is None:
        return "sinfo not on PATH"
    try:
        answer = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 30 s"
    states = answer.stdout.split()
    if answer.returncode != 0:
        return f"sinfo failed: {answer.stderr.strip()}"
    if not any(state in ("idle", "mixed", "allocated") for state in states):
        return f"no usable node (states: {states})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    problem = _slurm_problem()
    if problem is None:
        return
    message = f"no SLURM cluster: {problem}; start one with `bash .ci/start_slurm.sh` (as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)  # CI promises a cluster: a missing one is a failure, not a skip
    pytest.skip(message)
