#!/bin/bash
# Lesson 3: ZeRO stages 1, 2 and 3, each with and without optimizer offload, on 2 GPUs: one command, six jobs.
#   bash slurm/submit_zero_2gpu.sh [train.py args]         e.g. --model 1b7 --samples-per-gpu 200
#   CONFIGS="stage2 stage3" bash slurm/submit_zero_2gpu.sh  a subset
# Offload moves the optimizer into host RAM: on a small node lower it, e.g. SBATCH_MEM_PER_NODE=64G.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p logs
# The six configs come from the lesson registry (workshop/lessons/__init__.py), so this list is not kept twice.
for config in ${CONFIGS:-$("${WORKSHOP_PYTHON:-python3}" -m workshop.lessons configs deepspeed_multi_gpu)}; do
    echo "$config: job $(sbatch --parsable --gpus-per-node=2 --job-name="${config}_2gpu" slurm/multi_gpu_zero.slurm "$config" "$@")"
done
