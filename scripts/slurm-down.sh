#!/usr/bin/env bash
# slurm-down.sh [DIR] — stops the throwaway cluster that scripts/slurm-up.sh started in DIR
# (default /tmp/ar-slurm) and leaves nothing of it running.
#
# In order: cancel every job (scancel sends TERM, then KILL after KillWait) and wait until
# squeue is empty; `scontrol shutdown`; then TERM to each daemon by the PID in its PID file
# (read first: shutdown deletes them), and KILL to whatever is left after 15 s. munged is
# stopped only if slurm-up.sh started it for DIR. Last, a sweep for strays (a slurmstepd
# and its job, left when the daemons died before they could cancel it), found by what ties
# them to DIR (see `ours`) — never by process name: the machine runs other people's.
# Safe to run twice, or on a cluster that is half up. DIR itself is kept (logs, jobcomp.txt).
set -uo pipefail

D=${1:-/tmp/ar-slurm}
[[ -d "$D" ]] || { echo "slurm-down: $D does not exist: nothing to stop" >&2; exit 0; }
D=$(cd "$D" && pwd)
export SLURM_CONF=$D/slurm.conf
started_ms=$(( $(date +%s%N) / 1000000 ))

say() { echo "slurm-down: $*" >&2; }
pid_of() { [[ -s "$1" ]] && cat "$1"; }
# alive PID: it has not exited (PID 1 may reap it late: a zombie counts as exited).
alive() { [[ -e /proc/$1 && "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
# stop SECONDS PID…: TERM to all, KILL to those still alive after SECONDS; fails if any
# survives that.
stop() {
    local secs=$1 p i; shift
    (( $# )) || return 0
    kill "$@" 2>/dev/null
    for ((i = 0; i < secs * 10; i++)); do
        for p in "$@"; do alive "$p" && break; done
        alive "$p" || return 0
        sleep 0.1
    done
    for p in "$@"; do
        alive "$p" && { say "PID $p did not exit $secs s after TERM: killing it"; kill -9 "$p" 2>/dev/null; }
    done
    sleep 0.2
    for p in "$@"; do alive "$p" && return 1; done
    return 0
}
# The processes of this cluster still running, and their descendants: the daemons carry
# the AR_SLURM_CLUSTER=DIR mark slurm-up.sh gave them; a slurmstepd does not (slurmd
# clears its environment) but keeps DIR/log/slurmd.log open. The descendants are a
# stray slurmstepd's job. This script and its caller are never listed.
ours() {
    local roots tree p i
    roots=$( {
        grep -lzx "AR_SLURM_CLUSTER=$D" /proc/[0-9]*/environ | cut -d/ -f3
        find /proc/[0-9]*/fd -maxdepth 1 -lname "$D/*" | cut -d/ -f3
    } 2>/dev/null | sort -un | grep -vx -e "$$" -e "$PPID")
    [[ -n "$roots" ]] || return 0
    tree=($roots)
    local -A parent_of=()
    while read -r p i; do parent_of[$p]=$i; done < <(ps -e -o pid= -o ppid=)
    for ((i = 0; i < ${#tree[@]}; i++)); do
        for p in "${!parent_of[@]}"; do
            [[ "${parent_of[$p]}" == "${tree[i]}" && " ${tree[*]} " != *" $p "* ]] && tree+=("$p")
        done
    done
    echo "${tree[@]}"
}

ctld=$(pid_of "$D/slurmctld.pid"); slurmd=$(pid_of "$D/slurmd.pid"); munged=
# munged is ours only if the PID slurm-up.sh recorded is still the running munged's.
if [[ -s "$D/munged.pid" && "$(pid_of "$D/munged.pid")" == "$(pid_of /run/munge/munged.pid)" ]]; then
    munged=$(pid_of "$D/munged.pid")
    # …and no other cluster's daemon still needs it (a second slurm-up.sh DIR shares it).
    for p in /proc/[0-9]*; do
        cmd=$({ tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null) || continue
        if [[ "$cmd" =~ ^/usr/sbin/slurm(ctld|d)\  && "$cmd" != *" $D/slurm.conf"* ]]; then
            say "leaving munged ($munged) running: ${p#/proc/} ($cmd) still uses it"
            munged=; break
        fi
    done
fi

if [[ -n "$ctld" && -s "$SLURM_CONF" ]] && alive "$ctld"; then
    timeout 10 scancel --user="$(id -un)" 2>/dev/null
    # KillWait (5 s) plus margin for jobs that ignore TERM.
    for _ in $(seq 150); do
        [[ -z "$(timeout 10 squeue -h -o %i 2>/dev/null)" ]] && break
        sleep 0.1
    done
    timeout 10 scontrol shutdown >/dev/null 2>&1
fi

# munged takes ~1.8 s to exit after TERM (the note); the others are gone already after
# `scontrol shutdown`, unless the controller was down.
stop 15 $ctld $slurmd $munged
rm -f "$D/munged.pid"

strays=$(ours | tr ' ' '\n' | grep -vx "$(pid_of /run/munge/munged.pid)" | tr '\n' ' ')
if [[ -n "$strays" ]]; then
    say "stopping stray processes of $D: $(echo $strays)"
    stop 3 $strays
fi
left=$(ours | tr ' ' '\n' | grep -vx "$(pid_of /run/munge/munged.pid)" | tr '\n' ' ')
if [[ -n "$left" ]]; then
    say "error: still running after SIGKILL: $(echo $left) (see ps -fp $(echo $left | tr ' ' ,))"
    exit 1
fi
say "stopped in $(( $(date +%s%N) / 1000000 - started_ms )) ms; logs kept in $D/log"
