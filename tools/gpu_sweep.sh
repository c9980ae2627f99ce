#!/usr/bin/env bash
# The lesson-2 sweep on one GPU, through the lesson's own scripts run with plain bash, as a student would:
# baseline, then every DeepSpeed config, bloom-560m architecture with random weights, 500 embedded examples,
# the lesson's TrainingArguments (checkpoint saving off: 9 runs x 3 epochs x ~8 GB of DeepSpeed checkpoints
# would not fit the disk, and writing them is not what the lesson's tables compare).
#
#   bash tools/gpu_sweep.sh start [configs...]   start in the background (survives this shell), return at once
#   bash tools/gpu_sweep.sh wait SECONDS          wait for it (up to SECONDS), then pack logs/ into $OUT
#
# Written for the device tool's machines (no network: HF_HUB_OFFLINE=1, carried wheels in /tmp/site).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIGS_DEFAULT="baseline stage0 stage1 stage2 stage1_offload stage2_offload stage3 stage2_offload_nopin stage3_offload stage3_offload_nopin"
read -r -a ARGS <<< "${SWEEP_ARGS:---model 560m --init random --data embedded --save-strategy no}"

case ${1:-} in
start)
    shift
    configs=${*:-$CONFIGS_DEFAULT}
    mkdir -p logs
    {
        echo "date: $(date -u +%FT%TZ)"
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
        python3 -c 'import torch, transformers, deepspeed; print("torch", torch.__version__, "transformers", transformers.__version__, "deepspeed", deepspeed.__version__)'
        echo "configs: $configs"
        echo "args: ${ARGS[*]}"
    } > logs/sweep_info.txt
    # Build DeepSpeed's ops once, before any timed run.
    setsid bash -c "
        python3 -m workshop.prebuild_ops > logs/prebuild_ops.log 2>&1
        for c in $configs; do
            bash slurm/\$c.slurm ${ARGS[*]} > logs/sweep-\$c.log 2>&1 || echo \"\$c failed: \$?\" >> logs/sweep_failures.txt
        done
        touch logs/sweep_done" > logs/sweep.log 2>&1 < /dev/null &
    echo "sweep started: $configs"
    ;;
wait)
    deadline=$((SECONDS + ${2:-540}))
    while [ ! -e logs/sweep_done ] && [ $SECONDS -lt $deadline ]; do sleep 5; done
    [ -e logs/sweep_done ] && echo "sweep done" || echo "sweep still running"
    ls logs
    tar czf "$OUT/logs.tgz" --exclude='*.tmp' logs
    ;;
*)
    echo "usage: $0 start [configs...] | wait SECONDS" >&2; exit 2 ;;
esac
