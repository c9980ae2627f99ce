#!/bin/bash
# Lesson 3: submit the weak-scaling series, one job per GPU count, in one command.
#   bash slurm/submit_weak_scaling.sh [train.py args]          e.g. --samples-per-gpu 2000 --model 560m
#   COUNTS="2 4" bash slurm/submit_weak_scaling.sh ...         other GPU counts (default 2 4 6 8)
# Then: python -m workshop.fill_tables logs/
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p logs  # sbatch's --output=logs/... fails the job if logs/ is missing
for n in ${COUNTS:-2 4 6 8}; do
    echo "$n GPUs: job $(sbatch --parsable --gpus-per-node="$n" slurm/multi_gpu_weak_scaling.slurm "$@")"
done
