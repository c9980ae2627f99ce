"""A run's output a student can read: slurm/common.sh shows the training's output without DeepSpeed's INFO lines
and the known-harmless warnings, says how many it left out, and keeps every line in train.out; --verbose shows
them all. On a real captured DeepSpeed run's output, and on lesson 2's tiny walk-through run."""
import subprocess
from pathlib import Path

import pytest

from test_slurm import job_env
from workshop.lessons import BY_NAME

REPO = Path(__file__).resolve().parents[1]
# a real DeepSpeed run's train.out (an H100, through the deepspeed launcher): INFO lines, hostfile, mismatch notices
CAPTURED = next((REPO / "docs" / "results" / "zero_single_gpu_h100-2026-12-05" / "runs").glob(
    "stage1_offload-*/train.out"))
NOISE = ("] [INFO] [", "Unable to find hostfile", "Gradient accumulation steps mismatch",
         "destroy_process_group() was not called")


def replay(tmp_path, *flags):
    """common.sh's workshop_run around a command that prints the captured output (its appended flags ignored)."""
    script = tmp_path / "replay.slurm"
    script.write_text(f'source "{REPO}/slurm/common.sh"\n'
                      f'workshop_run replay -- bash -c \'cat "$0"\' "{CAPTURED}" "$@"\n')
    env = {**job_env(), "WORKSHOP_LOGS_ROOT": str(tmp_path / "logs"), "WORKSHOP_OUTPUTS_ROOT": str(tmp_path / "out")}
    run = subprocess.run(["bash", str(script), *flags], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    [run_dir] = (tmp_path / "logs").glob("replay-local*")
    return run.stdout, run_dir


def test_the_default_output_leaves_out_the_noise_and_train_out_keeps_it(tmp_path):
    captured = CAPTURED.read_text()
    noisy = [line for line in captured.splitlines() if any(noise in line for noise in NOISE)]
    assert len(noisy) >= 15  # the capture does hold what the filter is for
    shown, run_dir = replay(tmp_path)
    assert (run_dir / "train.out").read_text() == captured  # every line kept
    assert not [line for line in shown.splitlines() if any(noise in line for noise in NOISE)]
    for line in captured.splitlines():
        if line.startswith("[workshop]") or "'loss'" in line:
            assert line in shown, line
    assert (f"[workshop] {len(noisy)} lines of DeepSpeed INFO and known-harmless warnings left out here; "
            "train.out has every line (--verbose shows them)") in shown


def test_verbose_shows_every_line(tmp_path):
    shown, run_dir = replay(tmp_path, "--verbose")
    assert CAPTURED.read_text() in shown and "left out here" not in shown
    assert (run_dir / "train.out").read_text() == CAPTURED.read_text()


@pytest.mark.slow
def test_a_tiny_deepspeed_run_says_what_it_does_and_leaves_out_the_noise(lesson_logs):
    logs = lesson_logs("deepspeed_single_gpu", ("slurm/stage0.slurm",))
    [run_dir] = logs.glob("stage0-local*")
    # the script's own output, kept beside the shared logs/ by conftest.py's walkthrough_logs (one folder a run)
    index = BY_NAME["deepspeed_single_gpu"].walkthrough.index(("slurm/stage0.slurm",))
    shown = (logs.parent.parent / f"{logs.parent.name}-{index}" / "output.txt").read_text()
    full = (run_dir / "train.out").read_text()
    assert "] [INFO] [" in full and "] [INFO] [" not in shown
    assert len(shown.splitlines()) < len(full.splitlines())
    for line in full.splitlines():
        if line.startswith("[workshop]"):
            assert line in shown, line
    assert "left out here; train.out has every line" in shown
