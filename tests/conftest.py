"""Shared fixtures. `slurm_cluster`: a real SLURM cluster (start one with `bash .ci/start_slurm.sh`).
`lesson_logs(name)`: the logs/ of a lesson's tiny walk-through, made once per session (tests/test_smoke.py).

Every test's CPU seconds (its process and the children it waited for, which is where the trainings run) are
summed per module at the end of a run: on a shared or busy machine wall times say little about what a module
costs, CPU seconds do. (Work done by a SLURM job runs under slurmd, not here, and is not counted.)"""

import gc
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

REPO = Path(__file__).resolve().parents[1]


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


def made_once(tmp_path_factory, name, make, wait=True):
    """A folder that `make(folder)` fills once per test session, shared by every module that asks for it.

    Under pytest-xdist each worker is its own process with its own basetemp, so a module-level cache would build
    the same runs once per worker: the folder lives in the session's shared temp root instead, and the first
    worker builds it under a file lock while the others wait for it. A build that fails leaves no mark, so the
    next test that asks tries again and reports its own failure. With `wait=False` a folder another worker is
    making right now is not waited for: the answer is None (the caller can make something else meanwhile)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' basetemps (popen-gw0, ...) sit inside the session's
    folder = root / f"made-once-{name}"
    try:
        with FileLock(f"{folder}.lock", timeout=-1 if wait else 0):
            if not (folder / ".made").exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                make(folder)
                (folder / ".made").touch()
    except Timeout:
        return None
    return folder


def walkthrough_logs(tmp_path_factory, name, *only):
    """logs/ holding lesson `name`'s tiny walk-through (the registry's `walkthrough_commands()`, run as
    scripts/run_workshop.sh runs them), made once per session and shared by every module that reads the runs.
    `only`: the walk-through entries (`lesson.walkthrough` items, e.g. ("slurm/stage2.slurm",)) to make, not all
    of them; the folder may then hold other runs of the lesson too, complete or not: read only your own.

    Each run is made once on its own (made_once per command), into the one logs/ folder: two workers that ask
    for the same lesson at once share the work instead of one waiting for the other's whole walk-through; each
    makes the runs nobody is making, then waits for the rest."""
    from test_slurm import job_env
    from workshop.lessons import BY_NAME

    shared = made_once(tmp_path_factory, f"walkthrough-{name}", lambda folder: None)
    # run_workshop.sh's environment (lesson 3: two processes on the CPU); run folders and checkpoints in `shared`
    env = {**job_env(), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "GPUS": "2",
           "WORKSHOP_LOGS_ROOT": str(shared / "logs"), "WORKSHOP_OUTPUTS_ROOT": str(shared / "outputs")}

    def maker(command):
        def make(folder):
            # its own process group: a run past its time is stopped whole (common.sh's TERM trap stops the
            # training and the loggers), not only the bash in front of it
            script = subprocess.Popen(["bash", *command], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True)
            try:
                output = script.communicate(timeout=1200)[0]
            except subprocess.TimeoutExpired:
                os.killpg(script.pid, signal.SIGTERM)
                try:
                    output = script.communicate(timeout=120)[0]
                except subprocess.TimeoutExpired:
                    os.killpg(script.pid, signal.SIGKILL)
                    output = script.communicate()[0]
                output += "\n(stopped after 1200 s)"
            (folder / "output.txt").write_text(output)
            if script.returncode != 0:  # leave no half run behind for the next attempt to trip over
                for run_id in re.findall(r"^\[workshop\] run (\S+) on ", output, re.M):
                    shutil.rmtree(shared / "logs" / run_id, ignore_errors=True)
                pytest.fail(f"{shlex.join(command)}: exit {script.returncode}\n" + output[-4000:])
        return make

    lesson = BY_NAME[name]
    unknown = set(only) - set(lesson.walkthrough)
    assert not unknown, f"not in {name}'s walk-through: {unknown}"
    pending = [(i, command) for i, (run, command) in enumerate(zip(lesson.walkthrough, lesson.walkthrough_commands()))
               if not only or run in only]
    for wait in (False, True):
        pending = [(i, command) for i, command in pending
                   if made_once(tmp_path_factory, f"walkthrough-{name}-{i}", maker(command), wait=wait) is None]
    return shared / "logs"


@pytest.fixture(scope="session")
def lesson_logs(tmp_path_factory):
    """lesson_logs(name) -> the logs/ folder of lesson `name`'s tiny walk-through (made once, read only);
    lesson_logs(name, *entries) makes only those entries of it (see walkthrough_logs)."""
    return lambda name, *only: walkthrough_logs(tmp_path_factory, name, *only)


def pytest_collection_modifyitems(items):
    """The modules that train or wait for minutes (any test marked slow, slurm or browser) first, each in its usual
    order, then the rest: pytest-xdist (--dist loadscope) hands out whole modules in this order, so the long ones
    start early and the short ones fill the end, instead of one worker running a long module alone at the end."""
    long = {item.nodeid.split("::")[0] for item in items
            if any(item.get_closest_marker(name) for name in ("slow", "slurm", "browser"))}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in long)  # stable: modules stay whole


def _cpu_seconds():
    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    item.cpu_started = _cpu_seconds()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "teardown" and hasattr(item, "cpu_started"):  # setup, call and teardown, fixtures included
        outcome.get_result().user_properties.append(("cpu_s", _cpu_seconds() - item.cpu_started))


_module_cpu = {}


def pytest_runtest_logreport(report):
    """Under pytest-xdist this runs in the controller too, with the user_properties the worker sent."""
    for key, value in report.user_properties:
        if key == "cpu_s" and report.when == "teardown":
            module = report.nodeid.split("::")[0]
            _module_cpu[module] = _module_cpu.get(module, 0.0) + value


def pytest_terminal_summary(terminalreporter):
    if not _module_cpu or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    total = sum(_module_cpu.values())
    terminalreporter.write_sep("=", f"CPU seconds per test module ({total:.0f} s in all; user+sys of the tests "
                                    "and the processes they waited for)")
    for module, seconds in sorted(_module_cpu.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{seconds:9.1f}  {module}")


def pytest_configure(config):
    """Collecting imports torch, transformers and DeepSpeed (about 750,000 objects, and every test module's): Python's
    garbage collector stays off until that is done, as in a training's process (workshop.entry.one_training_process):
    3.3 CPU-s less a collection (2 cores, 2026-12-07). Not in pytest-xdist's controller, which collects nothing."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        gc.disable()


def pytest_collection_finish(session):
    """What collecting made is frozen: the collector no longer walks it each time the tests' own garbage fills a
    generation."""
    gc.freeze()
    gc.enable()
