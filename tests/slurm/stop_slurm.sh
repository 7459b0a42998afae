#!/usr/bin/env bash
# Stop the daemons started by setup_slurm.sh, each by the PID it wrote, and
# wait until each is gone. Never kills anything by name.
set -uo pipefail

STATE_DIR=${1:-${LANGPRUNE_SLURM_DIR:-/tmp/langprune-slurm}}

stop_by_pidfile() {
    local pidfile=$1 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$pidfile"
}

# slurmd first so it does not try to re-register with a dying controller.
stop_by_pidfile "$STATE_DIR/slurmd.pid"
stop_by_pidfile "$STATE_DIR/slurmctld.pid"
stop_by_pidfile "$STATE_DIR/munged.pid"
# Drop the client config link only if it is ours.
if [ "$(readlink /run/slurm/conf 2>/dev/null)" = "$STATE_DIR/etc" ]; then
    rm -f /run/slurm/conf
fi
echo "SLURM stopped ($STATE_DIR)"
