#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (Debian or Ubuntu, as root), to try
# salrun's SLURM path and to test it:
#
#     apt-get install -y slurm-wlm munge     # once
#     scripts/slurm-local.sh up               # munged + slurmctld + slurmd; waits for the node
#     scripts/slurm-local.sh status
#     scripts/slurm-local.sh down             # stops the three daemons
#
# `up` and `down` are idempotent: `up` starts only what is not running, and
# restarts the SLURM daemons if the slurm.conf it writes has changed. It writes
# /etc/slurm/slurm.conf only if that file is absent or was written by this
# script, so it never overwrites a real cluster's configuration.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by salrun's scripts/slurm-local.sh"
LOGS=/var/log/slurm
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd

die() { echo "slurm-local: $*" >&2; exit 1; }

running() {  # running PIDFILE: the daemon whose pid the file holds is alive
    [[ -s $1 ]] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null
}

stop() {  # stop PIDFILE NAME
    if running "$1"; then
        kill "$(cat "$1")"
        for _ in $(seq 50); do running "$1" || break; sleep 0.2; done
        ! running "$1" || die "$2 did not stop (pid $(cat "$1"))"
        echo "stopped $2"
    fi
}

config() {
    local node cpus mem_mb
    node=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(( $(awk '/^MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))  # leave 10% to the system
    cat <<EOF
$MARK
ClusterName=salrun-local
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it may start again (default 120).
AuthInfo=cred_expire=5
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# Containers and laptops without cgroup delegation: track processes by their parent pid.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No slurmdbd: no accounting (sacct then says so, see salrun/cluster.py).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Schedule every second, not every minute, so that tests and requeued jobs start at once.
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
ReturnToService=2
JobRequeue=1
MinJobAge=60
MailProg=/bin/true
MpiDefault=none
KillWait=5
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

up() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null \
        || die "slurmctld or munged is missing: apt-get install -y slurm-wlm munge"
    [[ $EUID -eq 0 ]] || die "run me as root (I start daemons and write $CONF)"
    if [[ -e $CONF ]] && ! grep -qxF "$MARK" "$CONF"; then
        die "$CONF was not written by this script; I leave a real cluster's configuration alone"
    fi
    mkdir -p "$LOGS" "$STATE" "$SPOOL" /run/munge
    chown munge:munge /run/munge
    [[ -s /etc/munge/munge.key ]] || {
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    }
    if ! running /run/munge/munged.pid; then
        runuser -u munge -- munged
        echo "started munged"
    fi
    local new
    new=$(config)
    if [[ ! -e $CONF ]] || [[ "$(cat "$CONF")" != "$new" ]]; then
        stop /run/slurmd.pid slurmd
        stop /run/slurmctld.pid slurmctld
        printf '%s\n' "$new" > "$CONF"
        echo "wrote $CONF"
    fi
    running /run/slurmctld.pid || { slurmctld; echo "started slurmctld"; }
    running /run/slurmd.pid || { slurmd; echo "started slurmd"; }
    local state=""
    for _ in $(seq 60); do  # up to 30 s for the node to register
        state=$(sinfo -h -N -o %T 2>/dev/null | head -1)
        [[ $state == idle* || $state == mixed* || $state == allocated* ]] && break
        sleep 0.5
    done
    if ! [[ $state == idle* || $state == mixed* || $state == allocated* ]]; then
        tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
        die "the node did not come up (state: ${state:-none}); the logs are above"
    fi
    echo "slurm is up: node $(hostname -s), $(nproc) CPUs, state $state"
}

down() {
    stop /run/slurmd.pid slurmd
    stop /run/slurmctld.pid slurmctld
    stop /run/munge/munged.pid munged
}

status() {
    local pidfile
    for pidfile in /run/munge/munged.pid /run/slurmctld.pid /run/slurmd.pid; do
        if running "$pidfile"; then echo "$(basename "$pidfile" .pid): running"; else echo "$(basename "$pidfile" .pid): stopped"; fi
    done
    sinfo 2>/dev/null || true
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
