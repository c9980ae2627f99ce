"""Lesson 2 under a real sbatch: three offload configs submitted together, then both lesson-2 tables filled.

Needs the local cluster (`bash .ci/start_slurm.sh`). It claims 64 GiB per node, and the offload scripts ask for
`--mem=128G` (offload moves the optimizer into host RAM), so the test lowers memory and CPUs on the sbatch command
line, as a student on a smaller node would (an option given there overrides the script's #SBATCH line); all three
jobs then run at once."""

import json
import re
import subprocess
import sys

import pytest

from test_deepspeed_lesson import OFFLINE, check_deepspeed_run, copy_lesson
from test_slurm import job_env, wait_for_job

# stage2_offload comes along so part 1 of the tables (pin_memory true vs false) has both of its rows.
CONFIGS = ("stage3_offload", "stage2_offload_nopin", "stage2_offload")
TABLES = ("deepspeed_single_gpu_part1", "deepspeed_single_gpu_part2")


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@pytest.mark.slurm
@pytest.mark.slow
def test_sbatch_offload_configs_and_fill_both_lesson_tables(slurm_cluster, tmp_path):
    lesson = copy_lesson(tmp_path / "repo")
    (lesson / "logs").mkdir()  # --output=logs/%x-%j.out fails the job if logs/ is missing
    jobs = {}
    for name in CONFIGS:  # submit all first: they run side by side on the one node
        submitted = subprocess.run(["sbatch", "--parsable", "--mem=8G", "--cpus-per-task=4", f"slurm/{name}.slurm",
                                    "--profile", "tiny", "--num-train-epochs", "1"],
                                   cwd=lesson, env={**job_env(), **OFFLINE}, capture_output=True, text=True)
        assert submitted.returncode == 0, submitted.stderr
        jobs[name] = submitted.stdout.strip().split(";")[0]

    for name, job_id in jobs.items():
        state, exit_code = wait_for_job(job_id, timeout=1200)
        job_out = lesson / "logs" / f"{name}-{job_id}.out"
        assert (state, exit_code) == ("COMPLETED", "0:0"), job_out.read_text()[-4000:]
        check_deepspeed_run(lesson / "logs" / f"{name}-{job_id}", name)

    filled = subprocess.run([sys.executable, "-m", "workshop.fill_tables", "--by-run", "logs", "--format", "json"],
                            cwd=lesson, capture_output=True, text=True)
    assert filled.returncode == 0, filled.stderr
    tables = json.loads(filled.stdout)
    assert set(TABLES) <= set(tables), f"lesson-2 tables missing; fill_tables gave {sorted(tables)}"

    # Part 1 compares ZeRO-2 offload with and without pinned memory; part 2 has every configuration. Each row
    # has a runtime and a host-memory figure, and on this GPU-less node every GPU cell says so instead of a number.
    members = {"deepspeed_single_gpu_part1": [n for n in CONFIGS if n.startswith("stage2_offload")],
               "deepspeed_single_gpu_part2": list(CONFIGS)}
    for key, names in members.items():
        rows = {row["run"]: row for row in tables[key]["rows"]}
        assert sorted(rows) == sorted(f"{name}-{jobs[name]}" for name in names), key
        for row in rows.values():
            numbers = {column for column, value in row.items() if is_number(value)}
            assert any(re.search(r"runtime", column) for column in numbers), row
            assert any(re.search(r"host|rss|cpu mib", column, re.I) for column in numbers), row
            for column, value in row.items():
                if re.search(r"gpu|reserved", column, re.I):
                    assert isinstance(value, str) and value.startswith("n/a (no GPU)"), f"{key}: {column}: {value!r}"
