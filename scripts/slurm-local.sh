#!/usr/bin/env bash
# A single-node SLURM cluster on loopback, for trying (and testing) the workflow's cluster path.
#
#   scripts/slurm-local.sh install   # Debian packages slurm-wlm + munge and the Snakemake SLURM executor plugin (root)
#   scripts/slurm-local.sh start     # munged, slurmctld, slurmd started by hand (no systemd); state in $SLURM_LOCAL_DIR
#   scripts/slurm-local.sh status    # daemons, sinfo
#   scripts/slurm-local.sh stop      # stop by PID (slurmd, slurmctld, munged), TERM then KILL after 10 s
#
# Configless mode: clients (sbatch, squeue, and srun inside jobs, which the executor plugin runs with every
# SLURM_* variable removed) find the config through /run/slurm/conf, so nothing is written to /etc.
# No accounting (slurmdbd): the workflow's SLURM profile polls with squeue. Every wait is bounded.
# Recipe and pitfalls: ../shared/reference/slurm.md. Needs root (munge and slurm users, /run).
set -euo pipefail

D=${SLURM_LOCAL_DIR:-/tmp/sae-repro-slurm}
HOST=$(hostname -s)
PLUGIN_VERSION=2.8.0

die() { echo "slurm-local: $*" >&2; exit 1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.25 s, fail after SECONDS
    local limit=$1 what=$2; shift 2
    local deadline=$(( $(date +%s) + limit ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${limit}s waiting for $what (logs: $D/log)"
        sleep 0.25
    done
}

install_packages() {
    [ "$(id -u)" = 0 ] || die "install needs root (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge
    python -m pip install -q "snakemake-executor-plugin-slurm==$PLUGIN_VERSION"
}

write_conf() {
    local mem
    mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    cat > "$D/slurm.conf" <<EOF
ClusterName=localcluster
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldParameters=enable_configless
SlurmUser=slurm
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    [ "$(id -u)" = 0 ] || die "start needs root (munge and slurm users)"
    command -v slurmctld >/dev/null && command -v munged >/dev/null || die "not installed: run '$0 install'"
    if [ -f "$D/run/slurmctld.pid" ] && kill -0 "$(cat "$D/run/slurmctld.pid")" 2>/dev/null; then
        die "already running (state in $D); '$0 stop' first"
    fi
    mkdir -p "$D"/{state,spool,log,run}
    chown slurm:slurm "$D/state" "$D/log"
    write_conf
    command install -d -o munge -g munge -m 0755 /run/munge
    [ -f /run/munge/munged.pid ] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null || runuser -u munge -- /usr/sbin/munged
    /usr/sbin/slurmctld -f "$D/slurm.conf"
    wait_for 30 "slurmctld" bash -c "SLURM_CONF='$D/slurm.conf' scontrol ping | grep -q UP"
    /usr/sbin/slurmd --conf-server 127.0.0.1
    wait_for 30 "the node to be idle" bash -c "sinfo -h -o %T | grep -q idle"
    echo "slurm-local: up (state in $D)"; sinfo
}

stop_pid() {  # stop_pid PIDFILE: TERM, wait up to 10 s, then KILL
    local f=$1 pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    kill -0 "$pid" 2>/dev/null || { rm -f "$f"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
}

stop() {
    stop_pid "$D/run/slurmd.pid"
    stop_pid "$D/run/slurmctld.pid"
    stop_pid /run/munge/munged.pid
    if [ "$(readlink /run/slurm/conf 2>/dev/null)" = "$D/spool/conf-cache" ]; then
        rm -f /run/slurm/conf && rmdir /run/slurm 2>/dev/null || true
    fi
    echo "slurm-local: stopped"
}

status() {
    local up=0
    for f in "$D/run/slurmctld.pid" "$D/run/slurmd.pid" /run/munge/munged.pid; do
        if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then echo "running: $(basename "$f" .pid) $(cat "$f")"; up=$((up+1));
        else echo "stopped: $(basename "$f" .pid)"; fi
    done
    [ "$up" = 3 ] && sinfo
    [ "$up" = 3 ]
}

case "${1:-}" in
    install) install_packages ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
