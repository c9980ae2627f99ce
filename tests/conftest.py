"""Shared fixtures. `slurm_cluster`: a real SLURM cluster (start one with `bash .ci/start_slurm.sh`)."""

import os
import shutil
import subprocess

import pytest
from filelock import FileLock


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


def made_once(tmp_path_factory, name, make):
    """A folder that `make(folder)` fills once per test session, shared by every module that asks for it.

    Under pytest-xdist each worker is its own process with its own basetemp, so a module-level cache would build
    the same runs once per worker: the folder lives in the session's shared temp root instead, and the first
    worker builds it under a file lock while the others wait for it. A build that fails leaves no mark, so the
    next test that asks tries again and reports its own failure."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' basetemps (popen-gw0, ...) sit inside the session's
    folder = root / f"made-once-{name}"
    with FileLock(f"{folder}.lock"):
        if not (folder / ".made").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return folder
