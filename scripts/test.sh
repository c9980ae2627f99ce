#!/usr/bin/env bash
# Set up, start the local SLURM clusters the end-to-end tests submit to (root on Debian; see .ci/start_slurm.sh),
# and run the tests, spread over the machine's cores (pytest-xdist). Extra arguments go to pytest.
#   bash scripts/test.sh              everything, as CI runs it
#   bash scripts/test.sh --quick      a developer's loop: no test marked slow, slurm or browser (no cluster started)
#   bash scripts/test.sh -k fill      only the tests whose names match
# WORKSHOP_TEST_WORKERS: how many pytest-xdist workers (default: one more than the cores, since a third of the time
# the tests wait on SLURM, a browser or a subprocess's start; 1 runs in this process alone). On 2 cores, with one
# torch thread a process, 3 workers ran the suite in 1,150 s where 2 took 1,244 (2026-12-06).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$REPO_ROOT"
quick=0
if [[ ${1:-} == --quick ]]; then
    quick=1
    shift
fi
# DeepSpeed's ops (fused_adam, cpu_adam, the CPU collectives) are compiled into the one build folder every launch
# path loads them from (workshop/prebuild_ops.py) while the clusters start, instead of inside the first tests that
# need them, with the others waiting (async_io, for the NVMe config: see below).
prebuild_log=$(mktemp -t workshop-prebuild-ops.XXXXXX)
prebuild() { "$WORKSHOP_PYTHON" -m workshop.prebuild_ops "$@" >>"$prebuild_log" 2>&1; }
prebuild &
build=$!
aio=0
started=()
if [[ $quick == 0 && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
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
    aio=1
    bash .ci/start_slurm.sh
    bash .ci/start_slurm_two_node.sh  # beside it: tests/test_two_node.py submits there (docs/two_node_cluster.md)
    started=(.ci/stop_slurm.sh .ci/stop_slurm_two_node.sh)
elif [[ $quick == 0 ]]; then
    echo "[test] not root on Debian: not starting a local SLURM cluster (SLURM tests use one if sinfo answers)," \
        "not installing chromium (browser tests use /usr/bin/chromium and /usr/bin/chromedriver if there)"
fi
wait "$build" || echo "[test] prebuilding DeepSpeed's ops failed: the tests that need them build them again"
sed 's/^/[test] /' "$prebuild_log"
: >"$prebuild_log"
# async_io (only the two NVMe tests load it) compiles beside the first tests rather than before them: built next to
# the other ops it doubled their time on 2 cores (347 s in all, 2026-12-06), and the tests leave the CPU a third
# idle (they wait on SLURM). A test that needs it meanwhile waits for this build (workshop/deepspeed/ops.py's lock).
aio_build=
if [[ $aio == 1 ]]; then
    prebuild --ops async_io &
    aio_build=$!
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# GPU tests only where torch sees a CUDA GPU; elsewhere they are deselected (and counted as such, not as passed).
skip=()
if ! "$WORKSHOP_PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "[test] no CUDA GPU: deselecting the tests marked gpu"
    skip+=(gpu)
fi
[[ $quick == 0 ]] || skip+=(slow slurm browser)
filter=()
if [[ ${#skip[@]} -gt 0 ]]; then
    filter=(-m "$(printf 'not %s and ' "${skip[@]}" | sed 's/ and $//')")
fi
# Each test module runs whole on one worker (--dist loadscope): its module-scoped runs are made once; runs that
# several modules read are made once per session (tests/conftest.py's made_once). --no-loadscope-reorder keeps
# conftest.py's order (the modules that train or wait on SLURM first): pytest-xdist 3.8 otherwise hands modules out
# by their number of tests, so test_smoke (7 tests, 171 CPU-s in CI), test_model_states (4, 122) and
# test_slurm_zero (1 test, 64-132 s of SLURM jobs) came 32nd, 41st and 49th of 50, behind 46 quick config tests.
workers=(-n "${WORKSHOP_TEST_WORKERS:-$(($(nproc) + 1))}" --dist loadscope --no-loadscope-reorder)
[[ ${WORKSHOP_TEST_WORKERS:-} != 1 ]] || workers=()
# One torch thread a process: the workers and the trainings they start share the cores, and torch's default of a
# thread per core oversubscribed them (two tiny ZeRO runs side by side on 2 cores: 33.6 s with it, 24.6 s without).
[[ ${#workers[@]} == 0 ]] || export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
status=0
"$WORKSHOP_PYTHON" -m pytest -q -ra --durations=25 ${workers[@]+"${workers[@]}"} "${filter[@]}" "$@" || status=$?
if [[ -n $aio_build ]]; then
    wait "$aio_build" || echo "[test] building async_io beside the tests failed"
    sed 's/^/[test] /' "$prebuild_log"
fi
rm -f "$prebuild_log"
if [[ ${#started[@]} -gt 0 ]]; then
    echo "[test] left running: the local SLURM clusters (one node, and two nodes in network namespaces) for the" \
        "next run; stop them with: bash ${started[0]} && bash ${started[1]}"
fi
exit $status
