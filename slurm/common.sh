# Shared by every slurm/*.slurm file (source it, don't run it). One function does the work:
#
#   workshop_run NAME -- COMMAND [ARGS...]
#
# runs COMMAND with `--run-dir logs/NAME-JOBID` (and `--output-dir outputs/NAME-JOBID` unless ARGS set one)
# appended, so concurrent jobs never share a folder, and records the run folder of docs/DESIGN.md:
#   train.out         COMMAND's stdout+stderr (also printed to the job's own output)
#   gpu_memory.csv    python -m workshop.monitor gpu     (every GPU_LOG_INTERVAL seconds, default 1)
#   cpu_memory.log    psrecord --include-children        (every CPU_LOG_INTERVAL seconds, default 1)
#   loggers.json      pids, commands and how the training and each logger ended (the end record): the
#                     training's `ended` is "exited", "oom-killed" (the kernel's OOM killer, e.g. over
#                     `#SBATCH --mem`), "time limit" (SLURM's --time), "SIGTERM" (scancel), "SIGINT" or
#                     "rank lost" (one rank of a multi-process run was killed by a signal; the others were stopped)
# The loggers are always stopped, whether the training succeeds, fails or the job is cancelled, and
# the script exits with the training's exit status.
#
# Settings from the environment: WORKSHOP_PYTHON (default: the checkout's .venv, else `python` on PATH;
# sbatch passes the submitter's environment on), GPU_LOG_INTERVAL, CPU_LOG_INTERVAL, LOGGER_GRACE (seconds
# a logger gets to stop after TERM before KILL, default 5), WORKSHOP_LOGS_ROOT and WORKSHOP_OUTPUTS_ROOT (where
# run folders and checkpoints go, default logs/ and outputs/ here; `python -m workshop.submit` points them
# at the checkout while the code runs from its snapshot).
set -euo pipefail

# The repository is the folder above this file. Under sbatch the .slurm file itself runs from a spool
# copy, but it sources this file from $SLURM_SUBMIT_DIR/slurm/, so this holds there too.
WORKSHOP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$WORKSHOP_ROOT"
export PYTHONPATH="$WORKSHOP_ROOT${PYTHONPATH:+:$PYTHONPATH}"  # `import workshop` without installing it
export PYTHONUNBUFFERED=1  # progress reaches train.out and the job's .out as it happens (tail -f works)
# The start-up breakdown (workshop/startup.py) counts from here, unless a caller (benchmarks/bench.py) set it.
export WORKSHOP_LAUNCHED_AT=${WORKSHOP_LAUNCHED_AT:-$(date +%s.%N)}

# The interpreter: $WORKSHOP_PYTHON, else the checkout's .venv (made by scripts/setup.sh), else `python` on PATH.
PYTHON=${WORKSHOP_PYTHON:-python}
[[ -n ${WORKSHOP_PYTHON:-} || ! -x $WORKSHOP_ROOT/.venv/bin/python ]] || PYTHON=$WORKSHOP_ROOT/.venv/bin/python
GPU_LOG_INTERVAL=${GPU_LOG_INTERVAL:-1}
CPU_LOG_INTERVAL=${CPU_LOG_INTERVAL:-1}
LOGGER_GRACE=${LOGGER_GRACE:-5}

say() { echo "[workshop] $*"; }
die() { echo "[workshop] error: $*" >&2; exit 1; }

# refuse_flags WHY FLAG... -- ARGS...: exit 2 when ARGS hold a FLAG the script sets itself: argparse keeps the
# last of two, so one of them would be ignored without a word.
refuse_flags() {
    local why=$1 flags=() arg flag
    shift
    while [[ $1 != -- ]]; do flags+=("$1"); shift; done
    shift
    for arg in "$@"; do
        for flag in "${flags[@]}"; do
            if [[ $arg == "$flag" || $arg == "$flag="* ]]; then
                echo "[workshop] error: $flag is set by this script ($why); leave it out of the arguments" >&2
                exit 2
            fi
        done
    done
}

workshop_run() {
    [[ $# -ge 3 && $2 == -- ]] || die "usage: workshop_run NAME -- COMMAND..."
    local name=$1
    shift 2
    refuse_flags "each job gets its own logs/NAME-JOBID; a requeued job (same id) resumes there" --run-dir -- "$@"
    local cmd=() arg
    for arg in "$@"; do  # --verbose is this script's, not the training's
        if [[ $arg == --verbose ]]; then WORKSHOP_VERBOSE=1; else cmd+=("$arg"); fi
    done

    command -v "$PYTHON" >/dev/null || die "python '$PYTHON' not found: activate the workshop venv or set WORKSHOP_PYTHON"
    local psrecord
    psrecord=$(_psrecord)

    JOB_ID=${SLURM_JOB_ID:-local$(date +%Y%m%d-%H%M%S)-$$}
    RUN_ID=$name-$JOB_ID
    RUN_DIR=${WORKSHOP_LOGS_ROOT:-logs}/$RUN_ID
    mkdir -p "$RUN_DIR"
    export JOB_ID RUN_ID RUN_DIR
    _keep_earlier_attempt
    cmd+=(--run-dir "$RUN_DIR")
    [[ " ${cmd[*]} " == *" --output-dir "* || " ${cmd[*]} " == *" --output-dir="* ]] ||
        cmd+=(--output-dir "${WORKSHOP_OUTPUTS_ROOT:-outputs}/$RUN_ID")
    say "run $RUN_ID on $(hostname -s): $(cd "$RUN_DIR" && pwd)"

    TRAIN_PID='' TRAIN_STATUS='' TRAIN_ENDED='' TRAIN_CMD=$(_redact "$(_quote "${cmd[@]}")")
    OOM_KILLS_BEFORE=$(_oom_kills)  # compared at the end: did the kernel's OOM killer strike during the run?
    GPU_PID='' GPU_ENDED='not started' GPU_STATUS='' GPU_CMD=''
    CPU_PID='' CPU_ENDED='not started' CPU_STATUS='' CPU_CMD=''
    trap _workshop_on_exit EXIT
    trap '_workshop_on_signal TERM' TERM
    trap '_workshop_on_signal INT' INT

    # tee through fd 3: $! after `exec` is tee's pid, so the exit trap can let it finish train.out.
    exec 3> >(tee "$RUN_DIR/train.out" | _shown)
    TEE_PID=$!
    export WORKSHOP_COMMAND_AT
    WORKSHOP_COMMAND_AT=$(date +%s.%N)  # before the fork: the child's start time is the fork's
    "${cmd[@]}" >&3 2>&1 &
    TRAIN_PID=$!  # the command itself: bash execs a simple background command in the forked child
    exec 3>&-
    say "training pid $TRAIN_PID: $TRAIN_CMD"

    local gpu_cmd=("$PYTHON" -m workshop.monitor gpu --pid "$TRAIN_PID" --interval "$GPU_LOG_INTERVAL"
        --out "$RUN_DIR/gpu_memory.csv")
    "${gpu_cmd[@]}" &
    GPU_PID=$! GPU_ENDED=running GPU_CMD=$(_quote "${gpu_cmd[@]}")
    local cpu_cmd=("$psrecord" "$TRAIN_PID" --include-children --interval "$CPU_LOG_INTERVAL"
        --log "$RUN_DIR/cpu_memory.log")
    "${cpu_cmd[@]}" &
    CPU_PID=$! CPU_ENDED=running CPU_CMD=$(_quote "${cpu_cmd[@]}")
    say "loggers: gpu pid $GPU_PID, cpu (psrecord) pid $CPU_PID"

    # `|| ...` keeps set -e from ending the script here: the exit trap must still clean up.
    TRAIN_STATUS=0
    wait "$TRAIN_PID" || TRAIN_STATUS=$?
    say "training exited with status $TRAIN_STATUS"
    exit "$TRAIN_STATUS"  # the exit trap stops the loggers and writes loggers.json
}

# node_run TAG -- COMMAND: one srun task of a multi-node run (slurm/multi_node.slurm) with loggers of its own on
# its node: $RUN_DIR/gpu_memory-TAG.csv and cpu_memory-TAG.log (psrecord follows COMMAND and its children: the
# ranks this task starts), stopped when COMMAND ends, however it ends; loggers-TAG.json says how they ended.
# (workshop_run's loggers on the first node follow srun, whose tasks are not its children.)
node_run() {
    local tag=$1
    shift 2
    "$@" &
    local pid=$! status=0
    trap 'kill -TERM $pid 2>/dev/null' TERM INT  # srun stops a task with SIGTERM: pass it on
    local gpu_cmd=("$PYTHON" -m workshop.monitor gpu --pid "$pid" --interval "$GPU_LOG_INTERVAL"
        --out "$RUN_DIR/gpu_memory-$tag.csv")
    local cpu_cmd=("$(_psrecord)" "$pid" --include-children --interval "$CPU_LOG_INTERVAL"
        --log "$RUN_DIR/cpu_memory-$tag.log")
    "${gpu_cmd[@]}" >/dev/null 2>&1 &
    local gpu=$!
    "${cpu_cmd[@]}" >/dev/null 2>&1 &
    local cpu=$!
    wait "$pid" || status=$?
    while kill -0 "$pid" 2>/dev/null; do wait "$pid" || status=$?; done  # a trapped signal ends `wait` early
    _stop "$gpu"
    local gpu_ended=$_ENDED gpu_status=$_STATUS
    _stop "$cpu"
    "$PYTHON" - "$RUN_DIR/loggers-$tag.json" "$tag" "$(hostname -s)" "$status" "$gpu" "$(_quote "${gpu_cmd[@]}")" \
        "$gpu_ended" "$gpu_status" "$cpu" "$(_quote "${cpu_cmd[@]}")" "$_ENDED" "$_STATUS" <<'EOF'
import json, sys

out, task, node, status, *fields = sys.argv[1:]
def logger(pid, command, ended, exit_status):
    return {"pid": int(pid), "command": command, "ended": ended, "exit_status": int(exit_status), "stopped": True}
with open(out, "w") as f:
    json.dump({"task": task, "node": node, "exit_status": int(status),
               "loggers": {"gpu": logger(*fields[0:4]), "cpu": logger(*fields[4:8])}}, f, indent=2)
EOF
    return "$status"
}

# _psrecord: psrecord comes with the venv: on PATH, else next to the interpreter (the WORKSHOP_PYTHON case).
_psrecord() {
    local beside_python
    beside_python="$(dirname "$(command -v "$PYTHON")")/psrecord"
    if command -v psrecord; then return; fi
    [[ -x $beside_python ]] || die "psrecord not found on PATH or next to $PYTHON: pip install psrecord"
    echo "$beside_python"
}

# free_port: a TCP port nothing listens on now, so two jobs on one node never fight over 29500; it lies below the
# kernel's ephemeral range, where an outgoing connection could take it before the rendezvous binds it.
free_port() {
    "$PYTHON" -m workshop.launch port
}

# workshop_deepspeed CONFIG [--launcher deepspeed|python] [train.py args]: lesson 2's run of
# deepspeed_single_gpu/configs/CONFIG.json on one GPU, started by the `deepspeed` launcher as the lesson teaches
# (run through $PYTHON so the venv is used). `--launcher python` starts the one process itself with the
# distributed environment set, as transformers documents for notebooks: no launcher interpreters to wait for.
workshop_deepspeed() {
    local config=$1 entry
    shift
    entry=$(lesson_entry deepspeed_single_gpu) || exit 1
    workshop_deepspeed_as "$config" "$entry" "$config" "$@"
}

# lesson_entry LESSON: the lesson's training entry, from the lesson registry (workshop/lessons/__init__.py)
lesson_entry() {
    "$PYTHON" -m workshop.lessons entry "$1" || die "the lesson registry knows no lesson '$1'"
}

# workshop_deepspeed_as NAME ENTRY CONFIG [--launcher deepspeed|python] [train.py args]: the same for another
# lesson's ENTRY (its train.py), as run NAME (lesson 5: precision-stage2-bf16).
workshop_deepspeed_as() {
    local name=$1 entry=$2 file=deepspeed_single_gpu/configs/$3.json launcher=deepspeed args=()
    shift 3
    while [[ $# -gt 0 ]]; do  # --launcher anywhere among the arguments; the rest go to train.py
        case $1 in
        --launcher) launcher=${2:-}; shift; [[ $# -eq 0 ]] || shift ;;
        --launcher=*) launcher=${1#--launcher=}; shift ;;
        *) args+=("$1"); shift ;;
        esac
    done
    set -- ${args[@]+"${args[@]}"}
    refuse_flags "the config named first: $file" --ds-config -- "$@"
    [[ -f $file ]] || die "no DeepSpeed config $file"
    export WORKSHOP_LAUNCHER=$launcher  # recorded in the manifest's startup
    # DeepSpeed's ops are loaded (or built, the first time) by the training itself, before its clock starts.
    case $launcher in
    deepspeed)
        workshop_run "$name" -- "$PYTHON" -m deepspeed.launcher.runner --num_gpus=1 --master_port="$(free_port)" \
            "$entry" --ds-config "$file" "$@" ;;
    python)
        # what the launcher sets for one process (DeepSpeed's CPU backend reads LOCAL_SIZE for its shared memory)
        export RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 LOCAL_SIZE=1 CROSS_RANK=0 CROSS_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT
        MASTER_PORT=$(free_port)
        workshop_run "$name" -- "$PYTHON" "$entry" --ds-config "$file" "$@" ;;
    *) echo "error: --launcher must be deepspeed or python (got '$launcher')" >&2; exit 2 ;;
    esac
}

# workshop_precision NAME STAGE PRECISION [train.py args]: a lesson-5 run in PRECISION (fp32, fp16, bf16): the
# plain Trainer for STAGE none, else deepspeed_single_gpu/configs/STAGE.json through the launcher.
workshop_precision() {
    local name=$1 stage=$2 precision=$3 entry
    shift 3
    refuse_flags "the script's own name and precision: $name, $precision" --precision --config-name -- "$@"
    entry=$(lesson_entry precision_and_checkpointing) || exit 1
    if [[ $stage == none ]]; then
        workshop_run "$name" -- "$PYTHON" "$entry" --precision "$precision" --config-name "$name" "$@"
    else
        workshop_deepspeed_as "$name" "$entry" "$stage" --precision "$precision" --config-name "$name" "$@"
    fi
}

# What a student reads: the training's output without the lines that say nothing to act on (DeepSpeed's INFO
# lines, its launcher's environment dump, and warnings known to be harmless here), with one line at the end
# saying how many were left out. train.out keeps every line; --verbose (or WORKSHOP_VERBOSE=1) shows them all.
QUIET_LINES=(
    '^\[[0-9: ,-]+\] \[INFO\] '                                  # DeepSpeed's INFO lines (launcher, engine)
    'Unable to find hostfile, will proceed with training'           # one node: no hostfile is the normal case
    'Setting accelerator to CPU'                                     # a CPU run: the manifest says the device
    'Gradient accumulation steps mismatch: GradientAccumulationPlugin' # the DeepSpeed config's value is used
    'destroy_process_group\(\) was not called before program exit'  # torch at exit, after the run is saved
    "'pin_memory' argument is set as true but no accelerator"       # a CPU run: nothing to pin, nothing lost
    '(FutureWarning|DeprecationWarning): '                           # libraries' deprecations: not the student's
)
_shown() {
    if [[ ${WORKSHOP_VERBOSE:-0} == 1 ]]; then cat; return; fi
    # a Python warning is two lines, `file:line: Category: message` and the source line under it (indented): a
    # warning left out takes its source line with it
    QUIET_RE=$(IFS='|'; echo "${QUIET_LINES[*]}") awk '
        warned && /^  +[^ ]/ { left++; warned = 0; next }
        $0 ~ ENVIRON["QUIET_RE"] { left++; warned = /Warning: /; next }
        { warned = 0; print; fflush() }
        END { if (left) printf "[workshop] %d lines of DeepSpeed INFO and known-harmless warnings left out here; " \
              "train.out has every line (--verbose shows them)\n", left }'
}

# _keep_earlier_attempt: a requeued job (`sbatch --requeue`; same job id, so the same run folder and output dir)
# moves the loggers' files of the attempt before into $RUN_DIR/attempt-N/; manifest.json and log_history.jsonl
# stay (workshop.train records the attempts in them) and the training resumes from its latest checkpoint.
_keep_earlier_attempt() {
    [[ -f $RUN_DIR/loggers.json || -f $RUN_DIR/train.out ]] || return 0
    local n=0
    while [[ -e $RUN_DIR/attempt-$n ]]; do n=$((n + 1)); done
    mkdir "$RUN_DIR/attempt-$n"
    local file
    for file in train.out loggers.json gpu_memory.csv cpu_memory.log; do
        [[ ! -e $RUN_DIR/$file ]] || mv "$RUN_DIR/$file" "$RUN_DIR/attempt-$n/"
    done
    say "restart ${SLURM_RESTART_COUNT:-?} of $RUN_ID: the earlier attempt's logs are in $RUN_DIR/attempt-$n/"
}

# _redact TEXT: TEXT without a Hugging Face token (the environment's, or a --hub-token value).
_redact() {
    local text=$1 secret
    for secret in "${HF_TOKEN:-}" "${HUGGING_FACE_HUB_TOKEN:-}"; do
        [[ -z $secret ]] || text=${text//"$secret"/<redacted>}
    done
    sed -E 's/(--hub[-_]token[= ])[^ ]+/\1<redacted>/g' <<<"$text"
}

# _oom_kills: how many processes the kernel's OOM killer has killed in this job's memory cgroup (the
# `oom_kill` line of memory.oom_control under cgroup v1, of memory.events under v2); empty where unreadable.
# SLURM's `--mem` is enforced by this cgroup, and the training runs in the same one as this script.
_oom_kills() {
    local path
    path=$(sed -n 's/^[0-9]*:memory:\(.*\)/\1/p' /proc/self/cgroup)
    if [[ -n $path ]]; then
        path=/sys/fs/cgroup/memory$path/memory.oom_control
    else  # cgroup v2: the one `0::PATH` line
        path=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)/memory.events
    fi
    awk '$1 == "oom_kill" { print $2 }' "$path" 2>/dev/null || true
}

# _slurm_reason: why SLURM is ending this job, e.g. `TimeLimit` (squeue's %r); empty off-cluster.
_slurm_reason() {
    [[ -n ${SLURM_JOB_ID:-} ]] || return 0
    timeout 10 squeue -h -j "$SLURM_JOB_ID" -o %r 2>/dev/null || true
}

# _wait_gone PID SECONDS: true once PID has exited, false if it still runs after SECONDS (whole seconds).
_wait_gone() {
    local tries=$(($2 * 10))
    while kill -0 "$1" 2>/dev/null; do
        ((tries-- > 0)) || return 1
        sleep 0.1
    done
}

# _lost_rank_line: the first line of train.out where DeepSpeed's launcher or srun reports a rank killed by a signal.
_lost_rank_line() {
    local signalled='(Killed|Segmentation fault|Aborted|Bus error)'
    grep -m1 -E "exits with return code = -[0-9]+|srun: error: .*task [0-9]+: $signalled" "$RUN_DIR/train.out" 2>/dev/null
}

# _quote WORDS...: one string a shell would read back as these words (for the log and loggers.json).
_quote() {
    local quoted
    printf -v quoted '%q ' "$@"
    echo "${quoted% }"
}

# _stop PID: stop a logger; sets _ENDED ("exited by itself", "TERM" or "KILL") and _STATUS (exit status).
_stop() {
    _ENDED='exited by itself'
    if ! _wait_gone "$1" 2; then  # a moment to notice by itself that the training is gone
        _ENDED=TERM
        kill -TERM "$1" 2>/dev/null || true
        if ! _wait_gone "$1" "$LOGGER_GRACE"; then
            _ENDED=KILL
            kill -KILL "$1" 2>/dev/null || true
        fi
    fi
    _STATUS=0
    wait "$1" 2>/dev/null || _STATUS=$?  # blocks until it is really gone
}

_workshop_on_signal() {
    trap - TERM INT  # a second signal must not re-enter this
    TRAIN_ENDED=SIG$1
    local why=''
    # SLURM sends the same SIGTERM for scancel and for its time limit; only its reason tells them apart.
    if [[ $1 == TERM && $(_slurm_reason) == TimeLimit ]]; then TRAIN_ENDED='time limit' why=' (time limit)'; fi
    say "got SIG$1: stopping the training$why"
    if [[ -n $TRAIN_PID ]] && kill -0 "$TRAIN_PID" 2>/dev/null; then
        kill -TERM "$TRAIN_PID" 2>/dev/null || true
        kill -CONT "$TRAIN_PID" 2>/dev/null || true  # a paused training (kill -STOP, a debugger) must hear it too
        _wait_gone "$TRAIN_PID" 10 || kill -KILL "$TRAIN_PID" 2>/dev/null || true
        TRAIN_STATUS=0
        wait "$TRAIN_PID" 2>/dev/null || TRAIN_STATUS=$?
    fi
    if [[ $1 == TERM ]]; then exit 143; else exit 130; fi
}

_workshop_on_exit() {
    local status=$?
    trap - EXIT TERM INT
    set +e
    # SIGKILL (137) while the cgroup counted a new OOM kill: the kernel killed the training for memory.
    local oom_kills='' now
    now=$(_oom_kills)
    [[ -z $OOM_KILLS_BEFORE || -z $now ]] || oom_kills=$((now - OOM_KILLS_BEFORE))
    if [[ -z $TRAIN_ENDED && -n $TRAIN_STATUS ]]; then
        TRAIN_ENDED=exited
        if [[ $TRAIN_STATUS == 137 && ${oom_kills:-0} -gt 0 ]]; then
            TRAIN_ENDED=oom-killed
            say "the kernel's OOM killer stopped the training: it needed more host memory than the job may use" \
                "(#SBATCH --mem${SLURM_MEM_PER_NODE:+=${SLURM_MEM_PER_NODE}M}); ask for more, or use less"
        fi
    fi
    # A DeepSpeed training without a GPU removes its /dev/shm buffers (66 MiB a rank, in RAM) as it exits; these
    # are the ones of a training that was killed. The master port in their names is this job's.
    if [[ $TRAIN_CMD =~ --master_port=([0-9]+) ]]; then
        rm -f /dev/shm/deepspeed_allreduce_buffer_"$(id -u)"_*_"${BASH_REMATCH[1]}"_*
    fi
    if [[ -n $GPU_PID ]]; then _stop "$GPU_PID"; GPU_ENDED=$_ENDED GPU_STATUS=$_STATUS; fi
    if [[ -n $CPU_PID ]]; then _stop "$CPU_PID"; CPU_ENDED=$_ENDED CPU_STATUS=$_STATUS; fi
    say "gpu logger: $GPU_ENDED (status $GPU_STATUS); cpu logger: $CPU_ENDED (status $CPU_STATUS)"
    # train.out is complete once tee has drained the pipe (bounded: a stray grandchild may hold it open).
    _wait_gone "$TEE_PID" 5 || kill -TERM "$TEE_PID" 2>/dev/null
    # A rank killed by a signal (OOM aside), after which the launcher or srun stopped the rest: `rank lost`.
    local lost
    if [[ $TRAIN_ENDED == exited && $TRAIN_STATUS != 0 && ${oom_kills:-0} == 0 ]] && lost=$(_lost_rank_line); then
        TRAIN_ENDED='rank lost'
        say "a rank of the training was lost: $lost"
    fi
    "$PYTHON" - "$RUN_DIR/loggers.json" "$RUN_ID" "$TRAIN_PID" "$TRAIN_CMD" "$TRAIN_STATUS" "$TRAIN_ENDED" \
        "$oom_kills" "${SLURM_MEM_PER_NODE:-}" "$GPU_PID" "$GPU_CMD" "$GPU_ENDED" "$GPU_STATUS" \
        "$CPU_PID" "$CPU_CMD" "$CPU_ENDED" "$CPU_STATUS" <<'EOF'
import json, sys

out, run_id, *fields = sys.argv[1:]
number = lambda text: int(text) if text.isdigit() else None
def process(pid, command, ended, status):
    return {"pid": number(pid), "command": command, "ended": ended, "exit_status": number(status),
            "stopped": ended != "running"}
pid, command, status, ended, oom_kills, mem_mb, *fields = fields
record = {
    "run_id": run_id,
    # oom_kills: the kernel's OOM kills in the job's memory cgroup during the run (null: not readable);
    # memory_limit_mb: the job's `--mem` as SLURM passed it (null: none given, or off-cluster)
    "training": {"pid": number(pid), "command": command, "exit_status": number(status), "ended": ended or None,
                 "oom_kills": number(oom_kills), "memory_limit_mb": number(mem_mb)},
    "loggers": {"gpu": process(*fields[0:4]), "cpu": process(*fields[4:8])},
}
with open(out, "w") as f:
    json.dump(record, f, indent=2)
EOF
    say "wrote $RUN_DIR/loggers.json; exit status $status"
    exit "$status"
}
