#!/usr/bin/env bash
# Re-captures the Trainer log fixtures in tests/data/logs/ from real runs of tools/tiny_trainer_run.py:
#   transformers 4.x -> stdout_4x/baseline-4242.out   (floats:          {'train_runtime': 0.1861, ...})
#   transformers 5.x -> stdout_5x/baseline-5151.out   (rounded strings: {'train_runtime': '0.2707', ...})
#   the same 5.x run -> run_complete/baseline-1001/{train.out,log_history.jsonl,cpu_memory.log}
#                       and run_complete/baseline-1001.out (SLURM's copy of the stdout, beside the run folder)
# cpu_memory.log is psrecord watching the 5.x run. Not made here: run_complete/baseline-1001/manifest.json is
# written by hand to the DESIGN.md schema, and the gpu CSVs come from nvidia-smi on an H100 (gpu/h100_real.csv,
# copied to run_complete/baseline-1001/gpu_memory.csv) or by hand (see tests/test_logparse.py).
# The 5.x run uses the repo's .venv; the 4.x run a throwaway venv (torch 2.13.0 comes from the local wheel).
# Usage, from anywhere: bash tools/capture_trainer_4x.sh   (~1 minute, plus the venv install the first time)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=tests/data/logs
RUN=$DATA/run_complete/baseline-1001
TF4=${TF4_VENV:-/tmp/tf4}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ ! -x "$TF4/bin/python" ]; then
    python3 -m venv "$TF4"
    "$TF4/bin/pip" install -q torch==2.13.0 'transformers<5' accelerate
fi

# 4.x: only the stdout is kept (a bare SLURM-style .out with no run folder).
mkdir -p "$DATA/stdout_4x" "$WORK/tf4"
"$TF4/bin/python" tools/tiny_trainer_run.py "$WORK/tf4" > "$DATA/stdout_4x/baseline-4242.out" 2>&1

# 5.x: stdout as a bare .out, and the pieces of a run folder, with a real psrecord log of the same run.
mkdir -p "$DATA/stdout_5x" "$RUN" "$WORK/tf5"
.venv/bin/python tools/tiny_trainer_run.py "$WORK/tf5" > "$WORK/train.out" 2>&1 &
PID=$!
.venv/bin/psrecord "$PID" --include-children --interval 0.5 --log "$RUN/cpu_memory.log" > /dev/null
wait "$PID"
cp "$WORK/train.out" "$DATA/stdout_5x/baseline-5151.out"
cp "$WORK/train.out" "$RUN/train.out"
cp "$WORK/train.out" "$DATA/run_complete/baseline-1001.out"
cp "$WORK/tf5/log_history.jsonl" "$RUN/log_history.jsonl"
ls -l "$DATA"/stdout_4x "$DATA"/stdout_5x "$DATA"/run_complete "$RUN"
