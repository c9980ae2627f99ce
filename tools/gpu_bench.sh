#!/usr/bin/env bash
# The issue-5 benchmarks on the device tool's GPU machine, one call each (no network there: carried wheels).
#   bash tools/gpu_bench.sh setup                     install the carried wheels into /tmp/site (prints versions)
#   bash tools/gpu_bench.sh BENCH_ARGS...             setup, then python benchmarks/bench.py BENCH_ARGS...
# Results go under $OUT (bench-results/ and the run folders' logs).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH TORCH_CUDA_ARCH_LIST=9.0 HF_HUB_OFFLINE=1 \
    WORKSHOP_PYTHON=python3
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -c 'import pandas, tabulate' 2>/dev/null ||
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/ifmissing/*.whl
python3 -c 'import torch, transformers, deepspeed, triton, pandas; print("torch", torch.__version__, "transformers", transformers.__version__, "deepspeed", deepspeed.__version__, "triton", triton.__version__, "pandas", pandas.__version__)'
[[ ${1:-} == setup ]] && exit 0
mkdir -p "${OUT:-/tmp/out}"
python3 benchmarks/bench.py "$@" --work "${OUT:-/tmp/out}/runs"
