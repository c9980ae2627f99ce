#!/bin/bash
# Stop the two-node cluster of .ci/start_slurm_two_node.sh: its daemons by their pid files (never by name: the
# one-node cluster's daemons share the names), whatever a job left in a node's namespace, then the namespaces
# and the bridge. munged is left alone when the one-node cluster started it. State stays for the next start.
set -euo pipefail

DIR=${WORKSHOP_SLURM2_DIR:-/tmp/workshop-slurm2}
NODES=(wsn1 wsn2)
BRIDGE=wsbr0

stop() {  # NAME PIDFILE
    [[ -s $2 ]] || return 0
    local pid
    pid=$(cat "$2")
    if kill -TERM "$pid" 2>/dev/null; then
        echo "[stop_slurm_two_node] stopping $1 (pid $pid)"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$2"
}

for node in "${NODES[@]}"; do
    stop "sshd $node" "$DIR/run/sshd-$node.pid"
    stop "slurmd $node" "$DIR/run/slurmd-$node.pid"
done
stop slurmctld "$DIR/run/slurmctld.pid"
stop munged "$DIR/run/munged.pid"
for node in "${NODES[@]}"; do
    if ip netns list | grep -qw "$node"; then
        # anything still in the node's network namespace (a stray training) goes with it
        for pid in $(ip netns pids "$node"); do kill -KILL "$pid" 2>/dev/null || true; done
        ip link del "veth-$node" 2>/dev/null || true
        ip netns del "$node"
    fi
    rm -rf "/etc/netns/$node"
done
ip link del "$BRIDGE" 2>/dev/null || true
rm -f /etc/ssh/ssh_config.d/workshop-two-node.conf
echo "[stop_slurm_two_node] stopped"
