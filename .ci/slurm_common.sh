# Sourced by .ci/start_slurm.sh and .ci/start_slurm_two_node.sh: what their test clusters share.
# The sourcing script defines say() (its log prefix) before using these.

# install_slurm [TOOL=PACKAGE...]: Debian's SLURM daemons, client and munge (and the extra packages named),
# when any of their commands is missing
install_slurm() {
    local wanted=(slurmctld=slurmctld slurmd=slurmd sinfo=slurm-client munged=munge "$@") missing=() pair
    for pair in "${wanted[@]}"; do command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}"); done
    [[ ${#missing[@]} == 0 ]] && return 0
    say "installing ${wanted[*]#*=}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${wanted[@]#*=}" >/dev/null
}

# slurm_conf_shared STATE_DIR: the slurm.conf lines both clusters use (root daemons, munge, cores and memory as
# consumable resources, immediate scheduling, no accounting database)
slurm_conf_shared() {
    cat <<CONF
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job waits this long before it starts again (the default 120 s was most of the requeue test's time);
# it is also a step's launch credential's lifetime, ample on a local cluster
AuthInfo=cred_expire=30
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MpiDefault=none
ReturnToService=2
# lets a node claim more CPUs and memory than the machine has (the lessons' cluster-sized #SBATCH lines)
SlurmdParameters=config_overrides
# reject impossible requests at submit instead of pending forever
EnforcePartLimits=ALL
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$1/log/jobcomp.txt
GresTypes=gpu
CONF
}

# alive PIDFILE: the daemon named by the pid file is running
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_for_pidfile NAME PIDFILE LOG: daemons write their pid file after forking; if none comes, show the log
wait_for_pidfile() {
    for _ in $(seq 100); do
        alive "$2" && return 0
        sleep 0.1
    done
    say "error: $1 did not start; its log:" >&2
    tail -n 30 "$3" >&2 || true
    exit 1
}

# start_munged RUN_DIR LOG_DIR: one munged serves both clusters; start it unless one already answers
start_munged() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munged already answers"
        return 0
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge 2>/dev/null || true
    say "starting munged"
    munged --force --pid-file="$1/munged.pid" --log-file="$2/munged.log"
    wait_for_pidfile munged "$1/munged.pid" "$2/munged.log"
}
