#!/bin/bash
# Stop the daemons that .ci/start_slurm.sh started, by their pid files (never by name: other
# processes on the machine may share the name). State and config stay for the next start.
set -euo pipefail

DIR=${WORKSHOP_SLURM_DIR:-/tmp/workshop-slurm}

for daemon in slurmd slurmctld munged; do
    pidfile=$DIR/run/$daemon.pid
    [[ -s $pidfile ]] || continue
    pid=$(cat "$pidfile")
    if kill -TERM "$pid" 2>/dev/null; then
        echo "[stop_slurm] stopping $daemon (pid $pid)"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
done
