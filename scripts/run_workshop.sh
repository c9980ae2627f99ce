#!/usr/bin/env bash
# Set up, then run every lesson on the embedded default (bloom-tiny + generated SQuAD-format sample) on this
# machine, through the same .slurm files a cluster runs, and print the filled exercise tables.
#   bash scripts/run_workshop.sh              # everything; CPU is fine (the first run also installs .venv and
#                                             # builds DeepSpeed's ops)
#   bash scripts/run_workshop.sh baseline     # only the named lessons' scripts
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$REPO_ROOT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1  # the embedded default needs no network

export GPUS=${GPUS:-2}  # lesson 3 without GPUs: two processes on the CPU
# DeepSpeed's ops are compiled here, at set-up, so that no run's time or memory holds a compiler (a built op loads
# in a second or two)
"$WORKSHOP_PYTHON" -m workshop.prebuild_ops
# The walk-through, one run a line ("LESSON COMMAND..."), from the lesson registry (workshop/lessons/__init__.py):
# each lesson's scripts with the arguments its tiny run passes. An unknown lesson name is one error line.
# A run that fails does not stop the others: the tables are filled from every run that completed, and the failed
# ones are listed at the end with the command that reruns each (the exit status is then 1).
walkthrough=$("$WORKSHOP_PYTHON" -m workshop.lessons walkthrough "$@") || exit 2
failed=()
while read -r lesson command; do
    echo "[workshop] === $lesson: bash $command"
    eval "bash $command" < /dev/null || failed+=("exit $?: bash $command")  # the registry's shlex-quoted words
done <<<"$walkthrough"
echo "[workshop] === filled tables (python -m workshop.fill_tables logs/)"
tables=0
"$WORKSHOP_PYTHON" -m workshop.fill_tables logs/ || tables=$?
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "[workshop] ${#failed[@]} run(s) failed; the tables above hold the others. Rerun one with its command:" >&2
    printf '[workshop]   %s\n' "${failed[@]}" >&2
    exit 1
fi
exit $tables
