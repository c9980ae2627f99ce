#!/bin/bash
# Lesson 5: the plain Trainer and ZeRO stages 0-3, each in fp32, fp16 and bf16: one command, fifteen jobs.
#   bash slurm/submit_precision.sh [train.py args]              e.g. --model 560m --max-steps 200
#   STAGES="none stage2" PRECISIONS="fp32 bf16" bash slurm/submit_precision.sh   a subset
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p logs
# The stages come from the lesson registry (workshop/lessons/__init__.py), so this list is not kept twice.
for stage in ${STAGES:-none $("${WORKSHOP_PYTHON:-python3}" -m workshop.lessons configs precision_and_checkpointing)}; do
    for precision in ${PRECISIONS:-fp32 fp16 bf16}; do
        echo "$stage $precision: job $(sbatch --parsable --job-name="precision-$stage-$precision" \
            slurm/precision.slurm "$stage" "$precision" "$@")"
    done
done
