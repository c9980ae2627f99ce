#!/bin/bash
# Start a real one-node SLURM cluster on this machine (Debian 12, as root) so the .slurm files can be
# tested with sbatch. Idempotent: running it again only starts what is not running.
#   bash .ci/start_slurm.sh        state in $WORKSHOP_SLURM_DIR (default /tmp/workshop-slurm)
#   bash .ci/stop_slurm.sh         stops the daemons again
# Why each setting is there: docs in /work/shared/notes/slurm-local.md ("Pitfalls seen").
set -euo pipefail

DIR=${WORKSHOP_SLURM_DIR:-/tmp/workshop-slurm}
NODE=$(hostname -s)
say() { echo "[start_slurm] $*"; }

if [[ $(id -u) != 0 ]]; then
    echo "[start_slurm] error: run as root (the daemons and mknod need it)" >&2
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
    || ! command -v munged >/dev/null; then
    say "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

mkdir -p "$DIR"/{etc,state/ctld,state/d,run,log,fakegpu}

# The node claims at least 16 CPUs and 256 GiB (config_overrides lets it claim more than it has), so
# the lesson's cluster-sized #SBATCH lines (--cpus-per-task, --mem=32G, offload's --mem=128G) are accepted as written.
real_mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
cpus=$(( $(nproc) > 16 ? $(nproc) : 16 ))
mem=$(( real_mem > 262144 ? real_mem : 262144 ))

# Two fake GPUs: gres.conf needs character devices (plain files are refused), so copies of /dev/null.
for i in 0 1; do
    [[ -c $DIR/fakegpu/nvidia$i ]] || mknod "$DIR/fakegpu/nvidia$i" c 1 3
done

cat > "$DIR/etc/slurm.conf" <<EOF
# Written by .ci/start_slurm.sh: a one-node test cluster, not a production setup.
ClusterName=workshopci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# cgroup tracking kills what a job leaves behind (linuxproc leaks background processes)
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job with no --mem takes the whole node and jobs run one at a time
DefMemPerCPU=$(( mem / cpus ))
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
# reject impossible requests at submit instead of pending forever
EnforcePartLimits=ALL
DependencyParameters=kill_invalid_depend
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

cat > "$DIR/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu File=$DIR/fakegpu/nvidia[0-1]
EOF

cat > "$DIR/etc/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=no
ConstrainDevices=no
ConstrainRAMSpace=yes
EOF

# Daemons and clients (sinfo, sbatch) read /etc/slurm/slurm.conf and its neighbours: link ours there,
# but never overwrite a configuration somebody else wrote.
mkdir -p /etc/slurm
for f in slurm.conf gres.conf cgroup.conf; do
    if [[ -e /etc/slurm/$f && ! -L /etc/slurm/$f ]]; then
        echo "[start_slurm] error: /etc/slurm/$f exists and is not ours; move it away first" >&2
        exit 1
    fi
    ln -sfn "$DIR/etc/$f" "/etc/slurm/$f"
done

# alive PIDFILE: the daemon named by the pid file is running
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_for_pidfile NAME PIDFILE: daemons write their pid file after forking
wait_for_pidfile() {
    for _ in $(seq 100); do
        alive "$2" && return 0
        sleep 0.1
    done
    echo "[start_slurm] error: $1 did not start; its log:" >&2
    tail -n 30 "$DIR/log/$1.log" >&2 || true
    exit 1
}

if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already answers"
else
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge 2>/dev/null || true
    say "starting munged"
    munged --force --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log"
    wait_for_pidfile munged "$DIR/run/munged.pid"
fi

if alive "$DIR/run/slurmctld.pid"; then
    say "slurmctld already running"
else
    say "starting slurmctld"
    slurmctld
    wait_for_pidfile slurmctld "$DIR/run/slurmctld.pid"
fi

if alive "$DIR/run/slurmd.pid"; then
    say "slurmd already running"
else
    say "starting slurmd"
    slurmd
    wait_for_pidfile slurmd "$DIR/run/slurmd.pid"
fi

# A drained state survives restarts (it is saved in the state dir): resume the node if needed.
for _ in $(seq 60); do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    case $state in
        idle | mixed | allocated) say "node $NODE is $state"; exit 0 ;;
        *drain* | *down*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
echo "[start_slurm] error: node $NODE not idle after 30 s (state: '${state:-no answer}'); daemon logs:" >&2
for log in slurmctld slurmd; do
    echo "---- $DIR/log/$log.log" >&2
    tail -n 30 "$DIR/log/$log.log" >&2 || true
done
exit 1
