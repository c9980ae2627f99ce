"""Runs that must stop early without wasting the job: a dead rank, a diverged loss, a full disk (workshop/guards.py).

Real tiny trainings on the CPU; the dead rank is a real 2-process DeepSpeed run (gloo) of the lesson's .slurm file.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from test_deepspeed_lesson import OFFLINE
from test_multi_gpu import copy_lesson
from test_slurm import check_loggers_stopped, job_env, repo_copy  # noqa: F401 - repo_copy: fixture
from workshop.fill_tables import build_tables


# One optimizer step per log line and a checkpoint each step, so the steps around a failure are all visible.
EACH_STEP = ["--profile", "tiny", "--logging-steps", "1", "--eval-strategy", "no", "--save-strategy", "steps",
             "--save-steps", "1", "--gradient-accumulation-steps", "1"]


def train(root, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "workshop.train", *args], cwd=root, env={**job_env(), **OFFLINE},
                          capture_output=True, text=True, timeout=timeout)


def events(run_dir):
    return [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]


def table_status(root, run_dir):
    """The status fill_tables shows for the run, the same in every table that has a row for it."""
    statuses = {row["status"] for table in build_tables([str(root / "logs")], by_run=True).values()
                for row in table.to_dict("records")
                if row.get("run") == run_dir.name}
    assert len(statuses) == 1, statuses
    return statuses.pop()


@pytest.mark.slow
def test_a_diverged_loss_stops_the_run_and_keeps_the_last_good_checkpoint(repo_copy):  # noqa: F811
    # A learning rate of 1e5 on the tiny model: step 1 and 2 log finite losses, from step 3 on the loss is NaN.
    run_dir, out = repo_copy / "logs" / "diverged", repo_copy / "outputs" / "diverged"
    run = train(repo_copy, *EACH_STEP, "--learning-rate", "1e5", "--max-steps", "40", "--run-dir", str(run_dir),
                "--output-dir", str(out))
    assert run.returncode == 5, run.stderr[-3000:]
    [line] = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert "the loss diverged" in line and "Lower the learning rate (--learning-rate 100000 now" in line
    assert "bf16" in line
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "diverged"
    losses = [e["loss"] for e in events(run_dir) if "loss" in e]
    # stopped after --diverge-patience (3) NaN losses in a row, not after 40 steps
    assert len(losses) < 10 and all(loss != loss for loss in losses[-3:]), losses
    last_finite = max(e["step"] for e in events(run_dir) if "loss" in e and e["loss"] == e["loss"])
    good = out / f"checkpoint-{last_finite - 1}"
    assert manifest["last_good_checkpoint"] == str(good)
    weights = load_file(good / "model.safetensors")
    assert all(tensor.isfinite().all() for tensor in weights.values())
    # the checkpoint whose weights gave the first NaN is set aside, not where a resume would look
    assert sorted(path.name for path in out.iterdir()) == [good.name, f"diverged-checkpoint-{last_finite}"]
    assert table_status(repo_copy, run_dir) == "diverged"


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: one checkpoint of the tiny model (2.9 MiB with its optimizer state) fits, a second does not."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_is_reported_and_the_rerun_resumes(repo_copy, small_disk):  # noqa: F811
    run_dir = repo_copy / "logs" / "disk_full"
    args = [*EACH_STEP, "--max-steps", "3", "--run-dir", str(run_dir), "--output-dir", str(small_disk)]
    run = train(repo_copy, *args)
    assert run.returncode == 6, run.stderr[-3000:]
    [line] = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert f"the disk under {small_disk} is full" in line and "removed the partial checkpoint-2" in line, line
    assert f"{small_disk}/checkpoint-1 is whole and a rerun resumes from it" in line
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "disk full"
    assert table_status(repo_copy, run_dir) == "disk full"
    assert sorted(path.name for path in small_disk.iterdir()) == ["checkpoint-1"]

    # The user frees space (here: a larger tmpfs) and reruns with the same folders: it goes on from checkpoint-1.
    subprocess.run(["mount", "-o", "remount,size=32m", str(small_disk)], check=True)
    rerun = train(repo_copy, *args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"[workshop] resuming from {small_disk}/checkpoint-1 (attempt 1)" in rerun.stdout
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["attempts"][0]["status"] == "disk full"
    assert {e["step"] for e in events(run_dir) if e["attempt"] == 1 and "loss" in e} == {2, 3}


@pytest.mark.slow
def test_a_full_disk_while_saving_the_final_model_leaves_no_final(repo_copy, small_disk):  # noqa: F811
    """The training is done; the final save hits the full disk: status `disk full`, exit 6, one error line, and no
    half-written final/ (scoring and workshop.generate would take it for the model)."""
    subprocess.run(["mount", "-o", "remount,size=512k", str(small_disk)], check=True)  # under the 1 MiB of weights
    run_dir = repo_copy / "logs" / "final_disk_full"
    run = train(repo_copy, "--profile", "tiny", "--max-steps", "2", "--eval-strategy", "no", "--save-strategy", "no",
                "--run-dir", str(run_dir), "--output-dir", str(small_disk))
    assert run.returncode == 6 and "Traceback" not in run.stderr, run.stderr[-3000:]
    [line] = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert f"the disk under {small_disk} is full" in line and "while saving the final model after step 2" in line
    assert "removed the partial final/" in line and "there is no checkpoint to go on from" in line, line
    assert not (small_disk / "final").exists()
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "disk full"
    assert table_status(repo_copy, run_dir) == "disk full"


def fill(disk):
    """Fill `disk` to its last page with one file, which is returned."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while os.write(fd, bytes(4096)):
            pass
    except OSError as err:
        assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)
    return filler


def error_line(run):
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    [line] = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.slow
def test_a_full_disk_under_the_run_folder_stops_the_run_and_a_resubmit_resumes(repo_copy, small_disk):  # noqa: F811
    """The run folder's own disk fills: the training stops as `disk full` (exit 6: it could no longer keep its
    logs), with its end record still written, no .tmp and no half line left; freed, a resubmit resumes."""
    run_dir, out = small_disk / "logs" / "run_disk_full", repo_copy / "outputs" / "run_disk_full"
    args = [*EACH_STEP, "--run-dir", str(run_dir), "--output-dir", str(out)]
    filler = fill(small_disk)  # full before it starts: not even a manifest fits
    early = train(repo_copy, *args, "--max-steps", "2")
    assert early.returncode == 6 and f"the disk under the run folder {run_dir} is full" in error_line(early)
    assert sorted(path.name for path in run_dir.iterdir()) == [".lock"]  # no empty manifest.json(.tmp)
    filler.unlink()

    training = subprocess.Popen([sys.executable, "-m", "workshop.train", *args, "--max-steps", "500"], cwd=repo_copy,
                                env={**job_env(), **OFFLINE}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    deadline = time.monotonic() + 240
    while not (out / "checkpoint-1" / "trainer_state.json").is_file() and training.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint-1 after 240 s"
        time.sleep(0.2)
    fill(small_disk)  # mid-training, once a checkpoint is whole
    stdout, stderr = training.communicate(timeout=300)
    stopped = subprocess.CompletedProcess(training.args, training.returncode, stdout, stderr)
    line = error_line(stopped)
    assert stopped.returncode == 6 and f"the disk under the run folder {run_dir} is full" in line, line
    assert "resubmit: it resumes from the last whole checkpoint" in line
    manifest = json.loads((run_dir / "manifest.json").read_text())  # the end record, in place of the last one
    assert (manifest["status"], manifest["exit_code"]) == ("disk full", 6) and 1 <= manifest["steps_done"] < 500
    assert not list(run_dir.glob("*.tmp"))
    for name in ("log_history.jsonl", "steps.jsonl"):  # every line whole: none cut off by the full disk
        [json.loads(line) for line in (run_dir / name).read_text().splitlines()]
    assert table_status(small_disk, run_dir) == "disk full"

    # Space freed, a resubmit: a new job, so a new run folder and output folder (a rerun into the same folders is
    # test_a_full_disk_during_a_checkpoint_is_reported_and_the_rerun_resumes). It goes on from the stopped run.
    filler.unlink()
    new_run = small_disk / "logs" / "run_disk_full-resubmitted"
    resubmit = train(repo_copy, *EACH_STEP, "--run-dir", str(new_run), "--output-dir", str(out) + "-resubmitted",
                     "--max-steps", str(manifest["steps_done"] + 2))
    assert resubmit.returncode == 0, resubmit.stderr[-3000:]
    assert f"[workshop] resuming from {out}/checkpoint-" in resubmit.stdout
    assert f"(the unfinished run {run_dir.name} of the same config" in resubmit.stdout
    assert json.loads((new_run / "manifest.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_partial_checkpoint_is_never_resumed_from(repo_copy):  # noqa: F811
    """A checkpoint without its trainer_state.json (a kill or a full disk mid-write) is removed on the rerun."""
    run_dir, out = repo_copy / "logs" / "partial", repo_copy / "outputs" / "partial"
    folders = ["--run-dir", str(run_dir), "--output-dir", str(out)]
    assert train(repo_copy, *EACH_STEP, "--max-steps", "2", *folders).returncode == 0
    (out / "checkpoint-2" / "trainer_state.json").unlink()  # as a write cut short leaves it
    rerun = train(repo_copy, *EACH_STEP, "--max-steps", "3", *folders)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "[workshop] removed half-written checkpoint-2" in rerun.stdout
    assert f"[workshop] resuming from {out}/checkpoint-1 (attempt 1)" in rerun.stdout


def rank_processes(run_id):
    return [p for p in psutil.process_iter(["pid", "cmdline"])
            if any(run_id in arg for arg in p.info["cmdline"] or []) and "deepspeed_multi_gpu/train.py" in
            " ".join(p.info["cmdline"] or []) and "deepspeed.launcher" not in " ".join(p.info["cmdline"] or [])]


@pytest.mark.slow
def test_a_dead_rank_ends_the_run_as_rank_lost(tmp_path):
    """Kill rank 1 of a 2-process DeepSpeed run mid-training: rank 0 and the launcher stop within seconds."""
    lesson = copy_lesson(tmp_path / "repo")
    script = subprocess.Popen(["bash", "slurm/multi_gpu_weak_scaling.slurm", "--profile", "tiny",
                               "--samples-per-gpu", "40", "--max-steps", "60", "--logging-steps", "1",
                               "--save-strategy", "no"], cwd=lesson, env={**job_env(), **OFFLINE, "GPUS": "2"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in script.stdout:
        seen.append(line)
        if "[workshop] step 1/" in line:  # after tqdm's carriage returns, mid-line
            break
    [run_dir] = (lesson / "logs").glob("weak_scaling_2gpu-*")
    victim = next(p for p in rank_processes(run_dir.name) if "--local_rank=1" in p.info["cmdline"])
    victim.send_signal(signal.SIGKILL)
    started = time.monotonic()
    rest = script.communicate(timeout=180)[0]
    took = time.monotonic() - started
    assert script.returncode != 0 and took < 60, (took, rest[-3000:])
    assert table_status(lesson, run_dir) == "rank lost", rest[-3000:]
    text = (run_dir / "train.out").read_text()
    assert "[workshop] rank 0 of 2" in text and "[workshop] rank 1 of 2" in text  # every rank's output kept
    assert rank_processes(run_dir.name) == []
    check_loggers_stopped(run_dir)


def test_divergence_rule_for_an_fp16_loss_scale_stuck_at_its_minimum():
    """The decision alone, on DeepSpeed's attribute names (engine.skipped_steps, ZeRO's optimizer.loss_scaler);
    tests/test_zero0_fp16.py reads them off real fp16 engines of every stage."""
    from types import SimpleNamespace

    from transformers import TrainerControl

    from workshop.guards import DivergenceCallback

    scaler = SimpleNamespace(dynamic=True, cur_scale=1.0, min_scale=1.0)
    optimizer = SimpleNamespace(loss_scaler=scaler)
    engine = SimpleNamespace(optimizer=optimizer, skipped_steps=0)
    guard = DivergenceCallback(patience=3)
    guard.trainer = SimpleNamespace(deepspeed=engine)
    control, state = TrainerControl(), SimpleNamespace(global_step=0)
    for step in range(1, 7):
        state.global_step = step
        engine.skipped_steps += step != 3  # step 3 is not skipped: the count starts again
        guard.on_step_end(None, state, control)
        assert control.should_training_stop == (step == 6), step  # steps 4, 5, 6 in a row
    assert "fp16 loss scale at its minimum 1.0" in guard.reason
    scaler.cur_scale = 2.0  # skipping while the scale can still fall is the normal fp16 warm-up
    warm_up, control = DivergenceCallback(patience=1), TrainerControl()
    warm_up.trainer = guard.trainer
    engine.skipped_steps += 1
    warm_up.on_step_end(None, state, control)
    assert not control.should_training_stop and warm_up.reason is None
