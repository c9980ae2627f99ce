#!/usr/bin/env bash
# Set up, then run every lesson on the embedded default (bloom-tiny + generated SQuAD-format sample) on this
# machine, through the same .slurm files a cluster runs, and print the filled exercise tables.
#   bash scripts/run_workshop.sh              # everything; CPU is fine (5.5 min on 2 cores once set up; the
#                                             # first run also installs .venv and builds DeepSpeed's ops)
#   bash scripts/run_workshop.sh baseline     # only the named lessons' scripts
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$REPO_ROOT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1  # the embedded default needs no network

# lesson -> the .slurm files it runs (each also runs off-cluster with plain bash); `script:A,B` passes A B first
declare -A LESSON_SCRIPTS=(
    [baseline]="slurm/baseline.slurm"
    [deepspeed_single_gpu]="slurm/stage0.slurm slurm/stage1.slurm slurm/stage1_offload.slurm slurm/stage2.slurm
        slurm/stage2_offload.slurm slurm/stage2_offload_nopin.slurm slurm/stage2_zenflow.slurm slurm/stage3.slurm
        slurm/stage3_offload.slurm slurm/stage3_offload_nopin.slurm"
    [deepspeed_multi_gpu]="slurm/multi_gpu_weak_scaling.slurm slurm/multi_gpu_zero.slurm:stage1
        slurm/multi_gpu_zero.slurm:stage1_offload slurm/multi_gpu_zero.slurm:stage2 slurm/multi_gpu_zero.slurm:stage2_offload
        slurm/multi_gpu_zero.slurm:stage3 slurm/multi_gpu_zero.slurm:stage3_offload"
    [make_it_fast]="slurm/fast.slurm"
    # lesson 5 on a CPU: no fp16 (it needs a GPU); the runs notebooks/05_precision_and_checkpointing.ipynb reads
    [precision_and_checkpointing]="slurm/precision.slurm:none,fp32 slurm/precision.slurm:none,bf16
        slurm/precision.slurm:stage2,fp32 slurm/precision.slurm:stage2,bf16 slurm/checkpointing.slurm:on,none,fp32
        slurm/checkpointing.slurm:on,stage2,fp32"
)
# Lesson 3 without GPUs: two processes on the CPU, 20 examples each, one epoch; lesson 5: ten steps a run.
declare -A LESSON_ARGS=([deepspeed_multi_gpu]="--samples-per-gpu 20 --num-train-epochs 1"
    [precision_and_checkpointing]="--max-steps 10")
export GPUS=${GPUS:-2}
lessons=("$@")
[ ${#lessons[@]} -gt 0 ] || lessons=(baseline deepspeed_single_gpu deepspeed_multi_gpu make_it_fast precision_and_checkpointing)
for lesson in "${lessons[@]}"; do
    [ -n "${LESSON_SCRIPTS[$lesson]:-}" ] || { echo "unknown lesson '$lesson'; choose from: ${!LESSON_SCRIPTS[*]}" >&2; exit 2; }
    for entry in ${LESSON_SCRIPTS[$lesson]}; do
        script=${entry%%:*} config=()
        [[ $entry != *:* ]] || IFS=, read -ra config <<<"${entry#*:}"
        # shellcheck disable=SC2086 # LESSON_ARGS holds several flags
        echo "[workshop] === $lesson: bash $script ${config[*]} --profile tiny ${LESSON_ARGS[$lesson]:-}"
        bash "$script" "${config[@]}" --profile tiny ${LESSON_ARGS[$lesson]:-}
    done
done
echo "[workshop] === filled tables (python -m workshop.fill_tables logs/)"
"$WORKSHOP_PYTHON" -m workshop.fill_tables logs/
