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
walkthrough=$("$WORKSHOP_PYTHON" -m workshop.lessons walkthrough "$@") || exit 2
while read -r lesson command; do
    echo "[workshop] === $lesson: bash $command"
    eval "bash $command" < /dev/null  # the registry's shlex-quoted words
done <<<"$walkthrough"
echo "[workshop] === filled tables (python -m workshop.fill_tables logs/)"
"$WORKSHOP_PYTHON" -m workshop.fill_tables logs/
