#!/bin/bash
# Start a real one-node SLURM cluster on this machine (Debian 12, as root) so the .slurm files can be
# tested with sbatch. Idempotent: running it again only starts what is not running.
#   bash .ci/start_slurm.sh        state in $WORKSHOP_SLURM_DIR (default /tmp/workshop-slurm)
#   bash .ci/stop_slurm.sh         stops the daemons again
# Why each setting is there: docs in /work/shared/notes/slurm-local.md ("Pitfalls seen").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/slurm_common.sh"

DIR=${WORKSHOP_SLURM_DIR:-/tmp/workshop-slurm}
NODE=$(hostname -s)
say() { echo "[start_slurm] $*"; }

if [[ $(id -u) != 0 ]]; then
    echo "[start_slurm] error: run as root (the daemons and mknod need it)" >&2
    exit 1
fi

install_slurm

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

{
    cat <<EOF
# Written by .ci/start_slurm.sh: a one-node test cluster, not a production setup.
ClusterName=workshopci
SlurmctldHost=$NODE(127.0.0.1)
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# cgroup tracking kills what a job leaves behind (linuxproc leaks background processes)
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
# without a default, a job with no --mem takes the whole node and jobs run one at a time
DefMemPerCPU=$(( mem / cpus ))
DependencyParameters=kill_invalid_depend
EOF
    slurm_conf_shared "$DIR"
    echo "NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN"
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} > "$DIR/etc/slurm.conf"

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

start_munged "$DIR/run" "$DIR/log"

if alive "$DIR/run/slurmctld.pid"; then
    say "slurmctld already running"
else
    say "starting slurmctld"
    slurmctld
    wait_for_pidfile slurmctld "$DIR/run/slurmctld.pid" "$DIR/log/slurmctld.log"
fi

if alive "$DIR/run/slurmd.pid"; then
    say "slurmd already running"
else
    say "starting slurmd"
    slurmd
    wait_for_pidfile slurmd "$DIR/run/slurmd.pid" "$DIR/log/slurmd.log"
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
