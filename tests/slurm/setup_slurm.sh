#!/usr/bin/env bash
# Start a throw-away, single-node SLURM on 127.0.0.1 with (fake) GPUs, two by
# default, so the Snakemake profile in profiles/slurm can be tried on a laptop
# or in CI with GPU jobs running side by side, as on a real GPU node.
#
#   sudo tests/slurm/setup_slurm.sh [STATE_DIR]     # default /tmp/langprune-slurm
#   (SLURM_TEST_GPUS=N sets the number of GPUs, default 2)
#   snakemake --profile profiles/slurm ...
#   sudo tests/slurm/stop_slurm.sh [STATE_DIR]
#
# Needs root (daemons run as root, packages come from apt). Everything the
# daemons write stays under STATE_DIR. Pitfalls handled here:
#  * the plugin runs each job's command through a nested `srun` and strips
#    every SLURM_* variable (SLURM_CONF included) from its environment, so the
#    config must sit where clients look by default. We leave /etc/slurm alone
#    and link /run/slurm/conf (the second place clients look) to STATE_DIR/etc;
#  * containers have no usable cgroup hierarchy for slurmd: use
#    proctrack/linuxproc, task/none, jobacct_gather/none (no cgroup plugin);
#  * no slurmdbd: AccountingStorageType=accounting_storage/none, so `sacct`
#    knows nothing and Snakemake must poll with `squeue`. squeue forgets a job
#    MinJobAge seconds after it ends; keep it >= 120 so no finished job is
#    missed between two status checks (the tests read each job's GPU request
#    with scontrol after the run, so the default keeps jobs for an hour);
#  * a GPU gres needs a device file per GPU: character devices made with
#    mknod (major 195 = nvidia) stand in for /dev/nvidia0, /dev/nvidia1, ...;
#  * slurmd must find its own NodeName: we use `hostname -s` with
#    NodeAddr=127.0.0.1 so no DNS is needed;
#  * ReturnToService=2 so a node that was down (e.g. after a restart) comes
#    back by itself instead of staying DOWN.
set -euo pipefail

STATE_DIR=${1:-${LANGPRUNE_SLURM_DIR:-/tmp/langprune-slurm}}
NODE=$(hostname -s)
MIN_JOB_AGE=${SLURM_MIN_JOB_AGE:-3600}
GPUS=${SLURM_TEST_GPUS:-2}

install_packages() {
    # Debian/Ubuntu package names; skipped when the daemons are already there.
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

node_memory_mb() {
    # Leave 1 GiB to the OS; slurmd refuses to start if RealMemory exceeds it.
    echo $(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 1024 ))
}

write_munge_key() {
    # One key shared by munged and every SLURM daemon on this host.
    mkdir -p "$STATE_DIR/munge" /run/munge
    if [ ! -s "$STATE_DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$STATE_DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 700 "$STATE_DIR/munge"
    chmod 400 "$STATE_DIR/munge/munge.key"
}

make_gpu_devices() {
    # Char devices with NVIDIA's major number. Where mknod is not allowed (a
    # container without CAP_MKNOD) plain files still give schedulable GPU
    # gres; slurmd then logs "not a valid character or block device".
    mkdir -p "$STATE_DIR/dev"
    local i
    for ((i = 0; i < GPUS; i++)); do
        [ -e "$STATE_DIR/dev/nvidia$i" ] && continue
        if ! mknod "$STATE_DIR/dev/nvidia$i" c 195 "$i" 2>/dev/null; then
            echo "mknod not permitted; using a plain file as GPU device $i" >&2
            touch "$STATE_DIR/dev/nvidia$i"
        fi
    done
}

write_slurm_conf() {
    local cpus mem
    cpus=$(nproc)
    mem=$(node_memory_mb)
    mkdir -p "$STATE_DIR/spool/ctld" "$STATE_DIR/spool/d" "$STATE_DIR/log" "$STATE_DIR/etc"
    cat >"$STATE_DIR/etc/slurm.conf" <<CONF
ClusterName=langprune
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=/run/munge/langprune.socket
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$STATE_DIR/spool/ctld
SlurmdSpoolDir=$STATE_DIR/spool/d
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MinJobAge=$MIN_JOB_AGE
MpiDefault=none
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=main Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
    # slurmd reads gres.conf from the directory of slurm.conf.
    local files="$STATE_DIR/dev/nvidia0"
    [ "$GPUS" -gt 1 ] && files="$STATE_DIR/dev/nvidia[0-$((GPUS - 1))]"
    cat >"$STATE_DIR/etc/gres.conf" <<CONF
NodeName=$NODE Name=gpu File=$files
CONF
}

link_default_config() {
    # Clients read SLURM_CONF, else /etc/slurm/slurm.conf, else this link.
    if [ -e /etc/slurm/slurm.conf ]; then
        echo "/etc/slurm/slurm.conf exists and would shadow this test cluster;" \
             "move it away or use that cluster instead" >&2
        exit 1
    fi
    mkdir -p /run/slurm
    ln -sfn "$STATE_DIR/etc" /run/slurm/conf
}

start_daemons() {
    local conf="$STATE_DIR/etc/slurm.conf"
    munged --force --key-file="$STATE_DIR/munge/munge.key" \
        --socket=/run/munge/langprune.socket \
        --pid-file="$STATE_DIR/munged.pid" \
        --log-file="$STATE_DIR/log/munged.log" \
        --seed-file="$STATE_DIR/munge/munge.seed"
    slurmctld -f "$conf"
    slurmd -f "$conf" -N "$NODE"
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

refuse_second_cluster() {
    # Two test clusters would share ports, the munge socket and /run/slurm/conf.
    local port
    for port in 16817 16818; do
        if port_in_use "$port"; then
            echo "port $port is taken: another SLURM (maybe a test cluster, see" \
                 "$(readlink /run/slurm/conf 2>/dev/null || echo 'no /run/slurm/conf')) is running;" \
                 "stop it with tests/slurm/stop_slurm.sh STATE_DIR" >&2
            exit 1
        fi
    done
}

check_alive() {
    # Daemons fork before they fail (bad config, taken port): check each PID.
    local daemon pidfile
    for daemon in munged slurmctld slurmd; do
        pidfile="$STATE_DIR/$daemon.pid"
        for _ in $(seq 1 20); do
            [ -s "$pidfile" ] && break
            sleep 0.25
        done
        if ! { [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
            echo "$daemon did not stay up; see $STATE_DIR/log/$daemon.log" >&2
            return 1
        fi
    done
}

wait_until_idle() {
    # The node reports in after slurmd registers; 60 s is plenty on a laptop.
    local state
    for _ in $(seq 1 120); do
        state=$(SLURM_CONF="$STATE_DIR/etc/slurm.conf" \
            sinfo --noheader --nodes="$NODE" --format=%T 2>/dev/null || true)
        if [ "$state" = "idle" ]; then
            return 0
        fi
        sleep 0.5
    done
    echo "node $NODE never became idle (last state: '${state:-none}');" \
         "see $STATE_DIR/log/" >&2
    return 1
}

main() {
    if [ "$(id -u)" != 0 ]; then
        echo "run as root: the SLURM daemons and apt-get need it" >&2
        exit 1
    fi
    install_packages
    refuse_second_cluster
    mkdir -p "$STATE_DIR"
    write_munge_key
    make_gpu_devices
    write_slurm_conf
    link_default_config
    start_daemons
    check_alive
    wait_until_idle
    echo "SLURM is up (config: /run/slurm/conf -> $STATE_DIR/etc); try: sinfo"
}

main "$@"
