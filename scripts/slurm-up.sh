#!/usr/bin/env bash
# slurm-up.sh [DIR] — a throwaway one-node Slurm cluster on 127.0.0.1, for the Slurm tests
# (ar/tests/slurm.rs) and for trying `ar loop --backend slurm` on one machine.
#
# Everything but munge's key and socket lives in DIR (default /tmp/ar-slurm): slurm.conf,
# gres.conf, two fake GPUs, state, spool, logs, the job-completion log and env.sh. Needs
# root and Debian 12 (Slurm 22.05); the recipe and its measurements are in
# ../shared/notes/slurm-loopback.md.
#
# Idempotent, one daemon at a time:
#   - installs slurmctld slurmd slurm-client munge with apt when they are missing;
#   - starts munged, slurmctld and slurmd without systemd, each only if it is not already
#     running (found through its PID file, checked against /proc so a reused PID is not
#     mistaken for it); a restart of one daemon keeps the cluster's state;
#   - writes the config and clears state/spool/logs only when no daemon of DIR runs, so a
#     fresh cluster never resurrects the jobs of an earlier one;
#   - waits (bounded) until `sinfo` says idle, else prints the daemon logs and fails.
# Prints `export SLURM_CONF=DIR/slurm.conf` on stdout (so `eval "$(scripts/slurm-up.sh)"`
# works) and writes the same line to DIR/env.sh; progress goes to stderr.
# Ports: the controller gets AR_SLURM_PORT if set, else the first of 6817, 6827, … 6907
# whose pair (slurmd takes the next port) nobody listens on, so two clusters (a developer's
# and CI's) can run side by side on one machine. Stop it with scripts/slurm-down.sh DIR.
set -euo pipefail

D=${1:-/tmp/ar-slurm}
mkdir -p "$D"
D=$(cd "$D" && pwd)
NGPU=2
READY_SECONDS=30           # slurmd registers ~1 s after start (measured); 30 s means broken
export SLURM_CONF=$D/slurm.conf
# Processes started here carry this mark, so slurm-down.sh can find the stray ones (a
# slurmstepd whose slurmd died) by their environment instead of by name.
export AR_SLURM_CLUSTER=$D
started_ms=$(( $(date +%s%N) / 1000000 ))

say() { echo "slurm-up: $*" >&2; }
fail() {
    echo "slurm-up: error: $*" >&2
    for f in "$D"/log/*.log "$D"/log/*.out; do
        [[ -s "$f" ]] && { echo "--- last lines of $f:" >&2; tail -n 15 "$f" >&2; }
    done
    exit 1
}
# alive PIDFILE NAME: the PID in PIDFILE runs and is NAME (guards against PID reuse).
alive() {
    local pid
    [[ -s "$1" ]] || return 1
    pid=$(cat "$1")
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "$2"
}

# 1. Packages. Debian's postinst scripts start the daemons through invoke-rc.d and fail
#    without systemd; a policy-rc.d that exits 101 denies those starts for the install.
#    --no-install-recommends: 8 packages instead of 42 (every plugin's libraries).
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    [[ "$(id -u)" == 0 ]] || fail "Slurm is not installed and this is not root: run as root, or" \
        "sudo apt-get install --no-install-recommends slurmctld slurmd slurm-client munge"
    command -v apt-get >/dev/null || fail "Slurm is not installed and there is no apt-get:" \
        "install slurmctld, slurmd, slurm-client and munge (Slurm 22.05) yourself"
    say "installing slurmctld slurmd slurm-client munge from Debian's packages …"
    made_policy=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
    if [[ -n "$made_policy" ]]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi
[[ "$(id -u)" == 0 ]] || fail "the daemons need root (SlurmUser=root, mknod, /run/munge): run as root"

# 2. munge. munge's postinst makes the key; without systemd nobody makes /run/munge.
[[ -s /etc/munge/munge.key ]] || { mungekey --create --force; chown munge:munge /etc/munge/munge.key; }
mkdir -p /run/munge
chown munge:munge /run/munge
if ! alive /run/munge/munged.pid munged; then
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid   # forks
    # Ours to stop at slurm-down; a munged that was already running is left alone there.
    cp /run/munge/munged.pid "$D/munged.pid"
fi
munge -n | unmunge >/dev/null || fail "munge does not work (munge -n | unmunge): see /var/log/munge/munged.log"

# 3. Config, only for a fresh cluster: rewriting it under a running daemon would change the
#    config hash the daemons compare, and clearing state would lose its jobs.
ctld_up=0; slurmd_up=0
alive "$D/slurmctld.pid" slurmctld && ctld_up=1
alive "$D/slurmd.pid" slurmd && slurmd_up=1
if [[ $ctld_up == 0 && $slurmd_up == 0 ]]; then
    rm -rf "$D/state" "$D/spool" "$D/log"
    mkdir -p "$D/state" "$D/spool" "$D/log" "$D/dev"
    H=$(hostname -s)
    listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
    PORT=${AR_SLURM_PORT:-}
    if [[ -z "$PORT" ]]; then
        for p in $(seq 6817 10 6907); do
            listening "$p" || listening $((p + 1)) || { PORT=$p; break; }
        done
        [[ -n "$PORT" ]] || fail "ports 6817-6908 are all in use: set AR_SLURM_PORT to a free port"
    fi
    # Fake GPUs: gres/gpu needs File= entries that are character devices (regular files
    # are rejected, Count= alone makes the node INVAL). c 1 3 is /dev/null's number.
    # Where mknod is not allowed (a container without CAP_MKNOD), existing devices do.
    gpu_files="$D/dev/gpu[0-$((NGPU - 1))]"
    for i in $(seq 0 $((NGPU - 1))); do
        [[ -c "$D/dev/gpu$i" ]] || mknod "$D/dev/gpu$i" c 1 3 2>/dev/null || { gpu_files=/dev/null,/dev/zero; break; }
    done
    # Why the non-default lines (the note, §1.3):
    # - names are `hostname -s` and addresses 127.0.0.1: no DNS;
    # - SlurmUser=root: the directories under DIR need no chown;
    # - proctrack/linuxproc, task/none: no cgroups without systemd;
    # - CPUs=8 + config_overrides: a 2-core machine still runs 8 one-CPU jobs at once;
    # - batch_sched_delay=0: jobs start in 0.3-1 s instead of up to 3.3 s;
    # - jobcomp/filetxt: `sacct -c` gives State and ExitCode without slurmdbd;
    # - KillWait=5: SIGKILL 5 s after SIGTERM (default 30) keeps cancel tests short;
    # - MinJobAge=300 (the default), written out: squeue forgets finished jobs after it.
    cat > "$D/slurm.conf" <<EOF
# Written by scripts/slurm-up.sh: a throwaway one-node cluster on 127.0.0.1 for tests.
ClusterName=arlab
SlurmctldHost=$H(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SlurmdParameters=config_overrides
GresTypes=gpu
ReturnToService=2
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt
KillWait=5
MinJobAge=300
NodeName=$H NodeAddr=127.0.0.1 CPUs=8 RealMemory=16000 Gres=gpu:$NGPU State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    # slurmd reads gres.conf from the directory of slurm.conf.
    echo "NodeName=$H Name=gpu File=$gpu_files" > "$D/gres.conf"
fi
[[ -s "$D/slurm.conf" ]] || fail "$D/slurm.conf is missing while a daemon of $D runs:" \
    "stop it with scripts/slurm-down.sh $D and run this again"
H=$(sed -n 's/^NodeName=\([^ ]*\) .*/\1/p' "$D/slurm.conf")

# 4. Daemons in the foreground (-D), detached with setsid; each writes its own PID file,
#    which is what slurm-down.sh stops (the PID of `setsid … &` is not the daemon's).
#    slurmctld -i: ignore the missing state files of a first start.
if [[ $ctld_up == 0 ]]; then
    rm -f "$D/slurmctld.pid"
    setsid /usr/sbin/slurmctld -D -i -f "$SLURM_CONF" >>"$D/log/slurmctld.out" 2>&1 </dev/null &
fi
if [[ $slurmd_up == 0 ]]; then
    rm -f "$D/slurmd.pid"
    setsid /usr/sbin/slurmd -D -N "$H" -f "$SLURM_CONF" >>"$D/log/slurmd.out" 2>&1 </dev/null &
fi

# 5. Ready when the node is idle (or already running jobs). A client takes up to ~9 s to
#    give up on a controller that is not listening yet, so each sinfo gets its own timeout.
state=
deadline=$(( $(date +%s) + READY_SECONDS ))
while (( $(date +%s) < deadline )); do
    state=$(timeout 10 sinfo -h -N -o %T 2>/dev/null || true)
    [[ "$state" =~ ^(idle|mixed|allocated)$ ]] && break
    sleep 0.1
done
[[ "$state" =~ ^(idle|mixed|allocated)$ ]] || fail "the node is not ready after ${READY_SECONDS} s" \
    "(sinfo says '${state:-nothing}'; SLURM_CONF=$SLURM_CONF). Look at the logs below; a port in" \
    "use needs AR_SLURM_PORT=<free port>; then scripts/slurm-down.sh $D and run this again"
echo "export SLURM_CONF=$SLURM_CONF" > "$D/env.sh"
say "cluster up in $D ($state, $NGPU GPUs) in $(( $(date +%s%N) / 1000000 - started_ms )) ms"
echo "export SLURM_CONF=$SLURM_CONF"
