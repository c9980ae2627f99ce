"""Nothing lost when a job fails: provenance, no token on disk, resume after a requeue, end-state markers.

Real tiny trainings in a fresh copy of the repository (see tests/test_slurm.py for the fixtures' idea).
"""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_slurm import (check_loggers_stopped, job_env, repo_copy,  # noqa: F401 - repo_copy: fixture
                              training_started, wait_for_job)
from workshop.runlog import git_provenance, provenance, redact

REPO = Path(__file__).resolve().parents[1]
FAKE_TOKEN = "hf_FAKEtokenForTheLeakTest0123456789"
# 36 training examples, 9 steps an epoch, a checkpoint each epoch (steps 9, 18, ..., 180); 20 epochs so that a kill right after checkpoint-9 always lands
# mid-run, however fast the machine (with 3 epochs an idle CI machine finished before the kill).
RESUMABLE = ["--profile", "tiny", "--subset-size", "40", "--gradient-accumulation-steps", "1",
             "--num-train-epochs", "20", "--save-strategy", "epoch", "--eval-strategy", "no", "--logging-steps", "3"]
# A killed run resumed from its checkpoint logs the losses an uninterrupted run logs, to this relative difference
# per logged step: the checkpoint restores the weights, optimizer, scheduler and RNG states (measured 2026-12-06,
# torch 2.13 on 2 CPU cores: equal to the bit at all 60 logged steps; killed at step 33, resumed from checkpoint-27)
RESUME_RTOL = 1e-6


def fill_tables(root):
    tables = subprocess.run([sys.executable, "-m", "workshop.fill_tables", "--by-run", "logs/", "--format", "csv"],
                            cwd=root, capture_output=True, text=True)
    assert tables.returncode == 0, tables.stderr
    return tables.stdout


def test_provenance_of_this_checkout():
    found = git_provenance(REPO)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=REPO, capture_output=True).stdout
    assert found["commit"] == head and found["source"] == "git"
    assert found["diff_sha256"] == hashlib.sha256(diff).hexdigest()
    assert isinstance(found["untracked"], list)


def test_provenance_without_git_and_from_a_snapshot(tmp_path):
    found = provenance(tmp_path)
    assert found["commit"] is None and found["diff_sha256"] is None and "not a git checkout" in found["reason"]
    (tmp_path / "SNAPSHOT.json").write_text(json.dumps({"commit": "abc123", "diff_sha256": "d1ff"}))
    assert provenance(tmp_path) | {"root": None} == {"commit": "abc123", "diff_sha256": "d1ff",
                                                     "source": "snapshot", "root": None}


def test_redact(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    assert redact(["x", "--hub-token", "abc", f"--hub_token={FAKE_TOKEN}", f"pre{FAKE_TOKEN}"]) == \
        ["x", "--hub-token", "<redacted>", "--hub_token=<redacted>", "pre<redacted>"]


def test_no_token_in_any_file_of_the_run(repo_copy):  # noqa: F811
    env = dict(job_env(), HF_TOKEN=FAKE_TOKEN, HUGGING_FACE_HUB_TOKEN=FAKE_TOKEN[::-1])
    run = subprocess.run(["bash", "slurm/baseline.slurm", "--profile", "tiny", "--max-steps", "2"],
                         cwd=repo_copy, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    [run_dir] = (repo_copy / "logs").glob("baseline-local*")
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    assert {"manifest.json", "train.out", "log_history.jsonl", "loggers.json"} <= {path.name for path in files}
    for path in files:
        text = path.read_bytes()
        assert FAKE_TOKEN.encode() not in text and FAKE_TOKEN[::-1].encode() not in text, path
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["provenance"]["commit"] is None  # the copy is no git checkout: null, with the reason
    assert manifest["provenance"]["reason"]


def resumable(root, name, *extra):
    """(command, run folder, output folder) of the tiny run the resume tests stop and go on with."""
    run_dir, out_dir = root / "logs" / name, root / "outputs" / name
    return ([sys.executable, "baseline/train.py", *RESUMABLE, *extra, "--run-dir", str(run_dir), "--output-dir",
             str(out_dir)], run_dir, out_dir)


def cancel_after_first_checkpoint(root, command, run_dir, out_dir):
    """Start `command` and send it SIGTERM (scancel's signal) once checkpoint-9 (the first epoch's) is whole."""
    first = subprocess.Popen(command, cwd=root, env=job_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out_dir / "checkpoint-9" / "trainer_state.json").is_file():
        assert first.poll() is None and time.monotonic() < deadline, "no checkpoint-9 before the run ended"
        time.sleep(0.2)
    time.sleep(1)  # let the checkpoint's last files land
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=60)
    assert not (out_dir / "final").exists(), "the first attempt finished before the kill"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "cancelled"


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(repo_copy):  # noqa: F811
    command, run_dir, out_dir = resumable(repo_copy, "baseline-requeue1")
    cancel_after_first_checkpoint(repo_copy, command, run_dir, out_dir)

    second = subprocess.run(command, cwd=repo_copy, env=job_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "[workshop] resuming from" in second.stdout

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["resumed_from"].startswith(str(out_dir / "checkpoint-"))
    [earlier] = manifest["attempts"]
    assert earlier["status"] == "cancelled"
    assert manifest["wall_seconds"] == pytest.approx(earlier["attempt_seconds"] + manifest["attempt_seconds"],
                                                     abs=0.2)
    events = [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]
    first_steps = [e["step"] for e in events if e["attempt"] == 0]
    second_steps = [e["step"] for e in events if e["attempt"] == 1]
    resumed_at = int(Path(manifest["resumed_from"]).name.split("-")[1])
    assert first_steps and second_steps and min(second_steps) > resumed_at >= 9  # went on, did not restart
    assert max(second_steps) == 20 * 9  # every epoch of RESUMABLE, counted once

    rows = [line for line in fill_tables(repo_copy).splitlines() if "baseline-requeue1" in line]
    assert len(rows) == 2 and all(",completed," in row for row in rows)  # one row in each baseline table


@pytest.mark.slow
def test_a_resubmit_resumes_the_unfinished_run_and_a_rerun_of_a_finished_one_starts_afresh(repo_copy):  # noqa: F811
    """A new job (new run and output folders) after a cancelled one goes on from its checkpoint by default and
    says so; once that resubmit completed, the next run of the same config is a new run from step 0, and the
    killed-and-resumed pair logged the losses of that uninterrupted run, step by step."""
    old, old_run, old_out = resumable(repo_copy, "baseline-job1")
    cancel_after_first_checkpoint(repo_copy, old, old_run, old_out)

    command, run_dir, _ = resumable(repo_copy, "baseline-job2")
    resubmit = subprocess.run(command, cwd=repo_copy, env=job_env(), capture_output=True, text=True, timeout=600)
    assert resubmit.returncode == 0, resubmit.stderr
    assert f"resuming from {old_out / 'checkpoint-'}" in resubmit.stdout
    assert "the unfinished run baseline-job1 of the same config" in resubmit.stdout
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["resumed_from"].startswith(str(old_out / "checkpoint-"))
    steps = [json.loads(line)["step"] for line in (run_dir / "log_history.jsonl").read_text().splitlines()]
    assert min(steps) > 9 and max(steps) == 20 * 9  # went on from the first epoch's checkpoint

    # the newest run of this config completed: another one is a repeat, not a resubmit; run whole, it is also the
    # uninterrupted run the killed-and-resumed pair (job1, then job2) must equal step by step
    again, again_run, _ = resumable(repo_copy, "baseline-job3")
    rerun = subprocess.run(again, cwd=repo_copy, env=job_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and "resuming" not in rerun.stdout, rerun.stdout[-2000:]
    assert "resumed_from" not in json.loads((again_run / "manifest.json").read_text())
    uninterrupted, before, after = (logged_losses(run) for run in (again_run, old_run, run_dir))
    assert sorted(uninterrupted) == list(range(3, 20 * 9 + 1, 3))
    assert before and after and set(before) | set(after) == set(uninterrupted)  # every logged step compared
    for step, loss in [*before.items(), *after.items()]:
        assert loss == pytest.approx(uninterrupted[step], rel=RESUME_RTOL), (step, loss, uninterrupted[step])


def logged_losses(run_dir) -> dict:
    """{step: the logged training loss} of a run's log_history.jsonl (its end record has no `loss`)."""
    events = (json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines())
    return {event["step"]: event["loss"] for event in events if "loss" in event}


def test_a_second_training_into_a_live_run_folder_is_refused(repo_copy):  # noqa: F811
    """Two runs in one folder would resume from each other's live checkpoints and mix their histories: the second
    stops with one error line, and the first's manifest is untouched."""
    command, run_dir, _ = resumable(repo_copy, "baseline-shared")
    first = subprocess.Popen(command, cwd=repo_copy, env=job_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for_events(run_dir, first)
        started = json.loads((run_dir / "manifest.json").read_text())["start_time"]
        second = subprocess.run(command, cwd=repo_copy, env=job_env(), capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-2000:]
        assert (f"error: the run folder {run_dir} is in use by a running training (pid {first.pid} on "
                in second.stderr)
        manifest = json.loads((run_dir / "manifest.json").read_text())  # the first's still: not rewritten
        assert (manifest["start_time"], manifest["status"], manifest["attempts"]) == (started, "running", [])
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    assert json.loads((run_dir / "manifest.json").read_text())["attempts"] == []


def test_resume_names_a_checkpoint_or_refuses_what_is_none(tmp_path):
    from workshop.config import WorkshopError, parse_args
    from workshop.resume import named_checkpoint

    assert parse_args(["--resume", "never"]).resume == "never"
    with pytest.raises(WorkshopError, match="--resume takes auto, never or a checkpoint folder"):
        parse_args(["--resume", str(tmp_path / "nowhere")])
    with pytest.raises(WorkshopError, match="not a whole checkpoint"):
        named_checkpoint(str(tmp_path))  # a folder, but no trainer_state.json: half-written or no checkpoint


def wait_for_events(run_dir, process=None, timeout=300):
    """Wait until the training has logged at least one event (so a kill leaves partial metrics)."""
    deadline = time.monotonic() + timeout
    history = run_dir / "log_history.jsonl"
    while not (history.is_file() and history.read_text().strip()):
        assert time.monotonic() < deadline and (process is None or process.poll() is None), "nothing logged"
        time.sleep(0.2)


def status_cells(root, run_name):
    rows = csv.reader(line for line in fill_tables(root).splitlines() if line.startswith(run_name + ","))
    return {row[1] for row in rows}


def test_sigkill_shows_killed_with_partial_metrics(repo_copy):  # noqa: F811
    script = subprocess.Popen(["bash", "slurm/baseline.slurm", *RESUMABLE], cwd=repo_copy, env=job_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    train_pid, _ = training_started(script)
    [run_dir] = (repo_copy / "logs").glob("baseline-local*")
    wait_for_events(run_dir, script)
    os.kill(train_pid, signal.SIGKILL)  # no handler runs: the manifest keeps "running"
    output = script.communicate(timeout=120)[0]
    assert script.returncode == 137, output
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"
    record = check_loggers_stopped(run_dir)
    assert record["training"]["exit_status"] == 137

    tables = fill_tables(repo_copy)
    rows = [row for row in tables.splitlines() if row.startswith(run_dir.name + ",")]
    assert rows and all(row.split(",")[1] == "killed (no end record)" for row in rows), tables
    loss = rows[0].split(",")[2]  # objective 1's first metric: the last logged training loss
    assert float(loss) > 0, tables


@pytest.mark.slurm
@pytest.mark.slow
def test_scancel_shows_cancelled(slurm_cluster, repo_copy):  # noqa: F811
    (repo_copy / "logs").mkdir()
    submitted = subprocess.run(["sbatch", "--parsable", "slurm/baseline.slurm", *RESUMABLE],
                               cwd=repo_copy, env=job_env(), capture_output=True, text=True)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    run_dir = repo_copy / "logs" / f"baseline-{job_id}"
    try:
        wait_for_events(run_dir, timeout=600)
    finally:
        subprocess.run(["scancel", job_id], check=True)
    state, _ = wait_for_job(job_id, timeout=120)
    assert state == "CANCELLED"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "cancelled"
    check_loggers_stopped(run_dir)
    assert status_cells(repo_copy, run_dir.name) == {"cancelled"}


@pytest.mark.slurm
@pytest.mark.slow
def test_submit_runs_the_snapshot_not_later_edits(slurm_cluster, repo_copy):  # noqa: F811
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "the submitted code"]):
        subprocess.run(git + command, cwd=repo_copy, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_copy, capture_output=True, text=True).stdout.strip()
    submitted = subprocess.run([sys.executable, "-m", "workshop.submit", "slurm/baseline.slurm", "--job-name",
                                "baseline", "--", "--profile", "tiny", "--max-steps", "2", "--eval-strategy", "no"],
                               cwd=repo_copy, env=job_env(), capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[2].rstrip(";")
    train_py = repo_copy / "workshop" / "train.py"  # an edit after submitting must not reach the job
    train_py.write_text('raise SystemExit("edited after submit")\n' + train_py.read_text())

    state, exit_code = wait_for_job(job_id, timeout=600)
    job_out = repo_copy / "logs" / f"baseline-{job_id}.out"
    assert (state, exit_code) == ("COMPLETED", "0:0"), job_out.read_text()
    run_dir = repo_copy / "logs" / f"baseline-{job_id}"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    [snapshot] = (repo_copy / "snapshots").glob("*-baseline")
    assert manifest["provenance"]["source"] == "snapshot" and manifest["provenance"]["commit"] == head
    assert manifest["provenance"]["root"] == str(snapshot) and not manifest["provenance"]["dirty"]
    assert (repo_copy / "outputs" / f"baseline-{job_id}" / "final").is_dir()
    assert "edited after submit" not in (run_dir / "train.out").read_text()
    assert str(snapshot) in submitted.stdout


@pytest.mark.slurm
@pytest.mark.slow
def test_requeued_job_resumes_in_the_same_run_folder(slurm_cluster, repo_copy):  # noqa: F811
    (repo_copy / "logs").mkdir()
    submitted = subprocess.run(["sbatch", "--parsable", "--requeue", "slurm/baseline.slurm", *RESUMABLE],
                               cwd=repo_copy, env=job_env(), capture_output=True, text=True)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    run_dir, out_dir = repo_copy / "logs" / f"baseline-{job_id}", repo_copy / "outputs" / f"baseline-{job_id}"
    deadline = time.monotonic() + 600
    while not (out_dir / "checkpoint-9" / "trainer_state.json").is_file():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id])
            pytest.fail("no checkpoint-9 in 600 s")
        time.sleep(0.2)
    time.sleep(1)
    subprocess.run(["scontrol", "requeue", job_id], check=True)  # what a preemption or node failure does

    state, exit_code = wait_for_job(job_id, timeout=900)
    assert (state, exit_code) == ("COMPLETED", "0:0"), (repo_copy / "logs" / f"baseline-{job_id}.out").read_text()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["resumed_from"]
    assert [attempt["status"] for attempt in manifest["attempts"]] == ["cancelled"]
    assert (run_dir / "attempt-0" / "train.out").is_file() and (run_dir / "attempt-0" / "loggers.json").is_file()
    assert "resuming from" in (run_dir / "train.out").read_text()
    assert status_cells(repo_copy, run_dir.name) == {"completed"}


def test_flag_typo_shows_failed_without_manifest(repo_copy):  # noqa: F811
    run = subprocess.run(["bash", "slurm/baseline.slurm", "--profile", "tiny", "--leraning-rate", "1"],
                         cwd=repo_copy, env=job_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    [run_dir] = (repo_copy / "logs").glob("baseline-local*")
    assert not (run_dir / "manifest.json").exists() and "--leraning-rate" in (run_dir / "train.out").read_text()
    assert status_cells(repo_copy, run_dir.name) == {"failed (exit 2, no manifest)"}
