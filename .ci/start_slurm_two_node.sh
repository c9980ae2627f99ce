#!/bin/bash
# Start a real two-node SLURM cluster on this one machine (Debian 12, as root), next to the one-node cluster of
# .ci/start_slurm.sh and independent of it: its own slurm.conf (clients find it through SLURM_CONF), ports,
# state folder and a slurmctld of its own. Each compute node is a slurmd in its own network and UTS namespace
# (`ip netns`, a veth pair on a bridge, its own hostname and /etc/hosts), so `hostname`, MASTER_ADDR, gloo and
# ssh see two machines. Every address is a private one on that bridge; nothing leaves this machine. The file
# system is shared, as NFS is on a real cluster. Each node also runs an sshd (for LAUNCHER=ssh) that accepts
# only the key this script makes. Idempotent; recipe and pitfalls: docs/two_node_cluster.md.
#   bash .ci/start_slurm_two_node.sh     prints the SLURM_CONF line to export (also in $DIR/env)
#   bash .ci/stop_slurm_two_node.sh      stops every daemon and removes the namespaces and the bridge
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/slurm_common.sh"

DIR=${WORKSHOP_SLURM2_DIR:-/tmp/workshop-slurm2}
NODES=(wsn1 wsn2)
BRIDGE=wsbr0
NET=10.77.0                       # the bridge is $NET.1 (slurmctld listens there), node i is $NET.1i
CTLD_PORT=6917 SLURMD_PORT=6918   # the one-node cluster keeps SLURM's defaults (6817, 6818)
say() { echo "[start_slurm_two_node] $*"; }
die() { echo "[start_slurm_two_node] error: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (namespaces, the bridge and the daemons need it)"
for tool in ip unshare nsenter; do command -v $tool >/dev/null || die "$tool not found (iproute2, util-linux)"; done
# policy-rc.d (Debian's docker images have one) keeps apt from starting a machine-wide sshd
install_slurm pdsh=pdsh sshd=openssh-server ssh=openssh-client
mkdir -p "$DIR"/{etc,state/ctld,run,log,ssh}
CONF=$DIR/etc/slurm.conf
HOST=$(hostname -s)

# ---------------------------------------------------------------------------------------------------- network
ip link show "$BRIDGE" >/dev/null 2>&1 || {
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
}
ip link set "$BRIDGE" up
{
    echo "127.0.0.1 localhost"
    for i in "${!NODES[@]}"; do echo "$NET.1$((i + 1)) ${NODES[$i]}"; done
    echo "$NET.1 $HOST-ctl"
} > "$DIR/etc/hosts"
for i in "${!NODES[@]}"; do
    node=${NODES[$i]} addr=$NET.1$((i + 1))
    if ! ip netns list | grep -qw "$node"; then
        ip netns add "$node"
        ip link add "veth-$node" type veth peer name eth0 netns "$node"
        ip link set "veth-$node" master "$BRIDGE" up
        ip -n "$node" addr add "$addr/24" dev eth0
        ip -n "$node" link set eth0 up
        ip -n "$node" link set lo up
    fi
    # bind-mounted over /etc/hosts in the node's mount namespace: each node resolves both nodes' names
    mkdir -p "/etc/netns/$node"
    cp "$DIR/etc/hosts" "/etc/netns/$node/hosts"
done

# ------------------------------------------------------------------------------------------------------ slurm
real_mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
mem=$(( real_mem > 262144 ? real_mem : 262144 ))
cat > "$CONF" <<EOF
# Written by .ci/start_slurm_two_node.sh: a two-node test cluster on one machine, not a production setup.
ClusterName=workshopci2
SlurmctldHost=$HOST($NET.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$DIR/state/ctld
# %n: each node's own spool, pid file and log (the file system is shared)
SlurmdSpoolDir=$DIR/state/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
# Process groups, not cgroups: both nodes share one cgroup tree (and the one-node cluster's), where equal job
# and step ids would collide.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
DefMemPerCPU=$(( mem / 16 ))
# a lost node is noticed in seconds, not SLURM's default 5 minutes
SlurmdTimeout=30
KillWait=10
EOF
slurm_conf_shared "$DIR" >> "$CONF"
for i in "${!NODES[@]}"; do
    echo "NodeName=${NODES[$i]} NodeAddr=$NET.1$((i + 1)) CPUs=16 RealMemory=$mem Gres=gpu:4 State=UNKNOWN" >> "$CONF"
done
echo "PartitionName=two Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP" >> "$CONF"

mkdir -p "$DIR/fakegpu"
for i in 0 1 2 3; do [[ -c $DIR/fakegpu/nvidia$i ]] || mknod "$DIR/fakegpu/nvidia$i" c 1 3; done
{
    echo "AutoDetect=off"
    for node in "${NODES[@]}"; do echo "NodeName=$node Name=gpu File=$DIR/fakegpu/nvidia[0-3]"; done
} > "$DIR/etc/gres.conf"
printf 'CgroupPlugin=cgroup/v1\nCgroupMountpoint=/sys/fs/cgroup\n' > "$DIR/etc/cgroup.conf"
echo "SLURM_CONF=$CONF" > "$DIR/env"

# -------------------------------------------------------------------------------------------------------- ssh
# One key for the test user root, one host key; each node's sshd listens on its own address only.
[[ -f $DIR/ssh/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C workshop-two-node -f "$DIR/ssh/id_ed25519"
[[ -f $DIR/ssh/host_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/ssh/host_ed25519"
cp "$DIR/ssh/id_ed25519.pub" "$DIR/ssh/authorized_keys"
# ssh to the two node names (and only to them) uses the test key, with no known_hosts prompt: DeepSpeed's
# launcher first runs a plain `ssh NODE hostname`, then pdsh, and neither reads an ssh option from the environment.
cat > /etc/ssh/ssh_config.d/workshop-two-node.conf <<EOF
# Written by .ci/start_slurm_two_node.sh, removed by .ci/stop_slurm_two_node.sh
Host ${NODES[*]}
    IdentityFile $DIR/ssh/id_ed25519
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
EOF
mkdir -p /run/sshd

start_munged "$DIR/run" "$DIR/log"

if alive "$DIR/run/slurmctld.pid"; then say "slurmctld already running"; else
    say "starting slurmctld on $NET.1:$CTLD_PORT"
    SLURM_CONF=$CONF slurmctld -f "$CONF"
    wait_for_pidfile slurmctld "$DIR/run/slurmctld.pid" "$DIR/log/slurmctld.log"
fi

for i in "${!NODES[@]}"; do
    node=${NODES[$i]} addr=$NET.1$((i + 1))
    mkdir -p "$DIR/state/$node"
    if alive "$DIR/run/slurmd-$node.pid"; then say "slurmd $node already running"; else
        say "starting slurmd $node ($addr) in its own network and UTS namespace"
        # slurmd forks into the background inside the namespaces; its jobs (and the sshd) inherit them. Not
        # `ip netns exec`: it remounts /sys, and slurmd needs /sys/fs/cgroup even with proctrack/pgid.
        nsenter --net="/run/netns/$node" unshare --uts --mount --propagation slave sh -c \
            "mount --bind /etc/netns/$node/hosts /etc/hosts && hostname $node && exec slurmd -f $CONF -N $node"
        wait_for_pidfile "slurmd $node" "$DIR/run/slurmd-$node.pid" "$DIR/log/slurmd-$node.log"
    fi
    if alive "$DIR/run/sshd-$node.pid"; then say "sshd $node already running"; else
        say "starting sshd $node on $addr:22 (the test key only)"
        cat > "$DIR/ssh/sshd_config-$node" <<EOF
ListenAddress $addr
HostKey $DIR/ssh/host_ed25519
PidFile $DIR/run/sshd-$node.pid
AuthorizedKeysFile $DIR/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AcceptEnv LANG LC_*
EOF
        # in the slurmd's namespaces (network, UTS, and the mount namespace holding this node's /etc/hosts)
        nsenter -t "$(cat "$DIR/run/slurmd-$node.pid")" -n -u -m /usr/sbin/sshd -f "$DIR/ssh/sshd_config-$node" \
            -E "$DIR/log/sshd-$node.log"
        wait_for_pidfile "sshd $node" "$DIR/run/sshd-$node.pid" "$DIR/log/sshd-$node.log"
    fi
done

export SLURM_CONF=$CONF
for _ in $(seq 60); do
    states=$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u || true)
    idle=$(grep -cE ' (idle|mixed|allocated)$' <<<"$states" || true)
    if [[ $idle == "${#NODES[@]}" ]]; then
        say "nodes idle: $(tr '\n' ' ' <<<"$states")"
        say "use it with: export SLURM_CONF=$CONF (or: set -a; source $DIR/env; set +a)"
        exit 0
    fi
    for node in "${NODES[@]}"; do
        if grep -qE "^$node .*(drain|down)" <<<"$states"; then
            scontrol update nodename="$node" state=resume 2>/dev/null || true
        fi
    done
    sleep 0.5
done
echo "[start_slurm_two_node] error: nodes not idle after 30 s: ${states:-no answer}; logs in $DIR/log" >&2
tail -n 20 "$DIR"/log/slurm*.log >&2 || true
exit 1
