#!/usr/bin/env bash
# Set up, start the local single-node SLURM cluster the end-to-end tests submit to (root on Debian; see
# .ci/start_slurm.sh), and run the tests. Extra arguments go to pytest, e.g. `bash scripts/test.sh -k fill`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$REPO_ROOT"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    bash .ci/start_slurm.sh
    bash .ci/start_slurm_two_node.sh  # beside it: tests/test_two_node.py submits there (docs/two_node_cluster.md)
    # Debian packages the tests need: Chromium and its driver for the browser tests (Selenium downloads no
    # browser), libaio for DeepSpeed's async_io op (the NVMe offload config, stage3_offload_nvme, trains in them).
    missing=()
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
    dpkg -s libaio-dev >/dev/null 2>&1 || missing+=(libaio-dev)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "[test] installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
else
    echo "[test] not root on Debian: not starting a local SLURM cluster (SLURM tests use one if sinfo answers)," \
        "not installing chromium (browser tests use /usr/bin/chromium and /usr/bin/chromedriver if there)"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# GPU tests only where torch sees a CUDA GPU; elsewhere they are deselected (and counted as such, not as passed).
gpu_filter=()
if ! "$WORKSHOP_PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "[test] no CUDA GPU: deselecting the tests marked gpu"
    gpu_filter=(-m "not gpu")
fi
exec "$WORKSHOP_PYTHON" -m pytest -q -ra "${gpu_filter[@]}" "$@"
